"""The man page and the bash completion of synguard, from its argparse parser.

usage: python packaging/gen_docs.py man|bash [--date YYYY-MM-DD]

Both are written from synguard.cli.build_parser(): the synopsis, the
commands, every option with its metavar, choices and help, and the epilog's
paragraphs (examples, exit codes, settings) come from there, so a flag added
to the parser shows up in both at the next `make deb`.
"""

import argparse
import re
import sys

from synguard import __version__
from synguard.cli import build_parser
from synguard.settings import SETTINGS


def subcommands(parser):
    """[(name, help, subparser)] in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return [(name, helps.get(name) or "", p) for name, p in action.choices.items()]
    return []


def options(parser):
    """The parser's actions other than -h, optionals first."""
    skip = (argparse._HelpAction, argparse._SubParsersAction)
    acts = [a for a in parser._actions if not isinstance(a, skip)]
    return [a for a in acts if a.option_strings] + [a for a in acts if not a.option_strings]


def metavar(action):
    if action.nargs == 0:
        return ""
    if action.metavar:
        return action.metavar
    if action.choices:
        return "|".join(action.choices)
    return action.dest.upper()


# --- man page ------------------------------------------------------------------


def roff(text):
    """Text for a roff line: backslashes, hyphens, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def synopsis(name, parser):
    words = parser.format_usage().split(None, 1)[1].split()  # drop "usage:"
    return ".SY synguard\n%s\n.YS" % roff(" ".join(words[1:]))


def tagged(action):
    names = ", ".join("\\fB%s\\fR" % roff(o) for o in action.option_strings)
    mv = metavar(action)
    if not action.option_strings:
        return "\\fI%s\\fR" % roff(mv)
    return names + (" \\fI%s\\fR" % roff(mv) if mv else "")


def epilog_sections(epilog):
    """The epilog's paragraphs as (header or None, intro, [lines])."""
    out = []
    for para in epilog.strip().split("\n\n"):
        lines = para.rstrip().split("\n")
        m = re.match(r"^([a-z][a-z ]*?)\s*(\(.*\))?:\s*(.*)$", lines[0])
        if m and not lines[0].startswith(" "):
            rest = [s for s in lines[1:] if not s.startswith(" ")]  # the intro, continued
            intro = " ".join(filter(None, [(m.group(2) or "").strip("()"), m.group(3), *rest]))
            out.append((m.group(1), intro, [s for s in lines[1:] if s.startswith(" ")]))
        else:
            out.append((None, " ".join(s.strip() for s in lines), []))
    return out


def block(lines):
    """Indented epilog lines: NAME  TEXT rows as a tagged list, anything else
    (commands with their comments) verbatim."""
    rows = [re.match(r"^\s+(\S+)\s{2,}(\S.*)$", s) for s in lines]
    if lines and all(rows):
        return "".join(".TP\n.B %s\n%s\n" % (roff(r.group(1)), roff(r.group(2))) for r in rows)
    text = "\n".join(s[2:] if s.startswith("  ") else s for s in lines)
    return ".PP\n.RS 4\n.nf\n%s\n.fi\n.RE\n" % roff(text) if lines else ""


def man_page(date):
    p = build_parser()
    cmds = subcommands(p)
    out = [
        '.TH SYNGUARD 8 "%s" "synguard %s" "System Administration"' % (date, __version__),
        ".SH NAME",
        "synguard \\- %s" % roff(p.description.split(": ", 1)[-1].rstrip(".")),
        ".SH SYNOPSIS",
    ]
    out += [synopsis(name, sp) for name, _, sp in cmds]
    out += [".SY synguard", "\\fB\\-\\-version\\fR | \\fB\\-h\\fR", ".YS"]
    out += [".SH DESCRIPTION", roff(p.description.split(": ", 1)[-1])]
    sections = epilog_sections(p.epilog)
    for header, intro, _lines in sections:
        if header is None:
            out += [".PP", roff(intro)]
    out += [".SH OPTIONS"]
    for a in options(p):
        out += [".TP", tagged(a), roff(a.help or "")]
    out += [".TP", "\\fB\\-h\\fR, \\fB\\-\\-help\\fR", "show the help and exit (also after a command)"]
    out += [".SH COMMANDS"]
    for name, help_text, sp in cmds:
        out += [".SS %s" % roff(name), roff(help_text[0].upper() + help_text[1:]) + "."]
        for a in options(sp):
            desc = a.help or ""
            if a.choices and a.option_strings and not desc:
                desc = "one of " + ", ".join(a.choices)
            if a.option_strings or desc:
                out += [".TP", tagged(a), roff(desc)]
    for header, intro, lines in sections:
        if header is None or header == "usage":  # SYNOPSIS says it, from the parser
            continue
        out += [".SH %s" % roff(header.upper())]
        if intro:
            out += [roff(intro[0].upper() + intro[1:])]
        out += [block(lines).rstrip("\n")] if lines else []
    out += [
        ".SH FILES",
        ".TP",
        ".I /etc/synguard/IFACE.toml",
        "the configuration synguard@IFACE.service attaches with (attach \\-\\-config)",
        ".TP",
        ".I /etc/synguard/synguard.example.toml",
        "an example configuration: every option, with its default",
        ".TP",
        ".I /lib/systemd/system/synguard@.service",
        "one instance per interface: systemctl enable \\-\\-now synguard@eth0",
        ".TP",
        ".I /sys/fs/bpf/synguard",
        "the pinned programs and maps",
        ".TP",
        ".I /run/synguard",
        "run state, one file per interface",
        ".SH SEE ALSO",
        ".BR bpftool (8),",
        ".BR nft (8),",
        ".BR systemctl (1)",
    ]
    return "\n".join(out) + "\n"


# --- bash completion -----------------------------------------------------------


def positional_kind(action):
    """How to complete a positional: interfaces, files, settings or nothing."""
    if action.dest == "iface":
        return "iface"
    if "file" in action.dest.lower() or (action.metavar or "").upper() == "FILE":
        return "file"
    if (action.metavar or "").startswith("SETTING="):
        return "setting"
    return ""


def value_completion(action):
    """Bash that completes the value after option action (in `case $prev`)."""
    if action.choices:
        return 'COMPREPLY=($(compgen -W "%s" -- "$cur"))' % " ".join(action.choices)
    if "file" in action.dest.lower() or (action.metavar or "").upper() == "FILE":
        return "_filedir"
    return ":"  # a free value: nothing to offer


def bash_completion():
    p = build_parser()
    cmds = subcommands(p)
    top = [o for a in p._actions for o in a.option_strings]
    out = [
        "# bash completion for synguard, generated from its argparse parser",
        "# (packaging/gen_docs.py) by make deb; synguard %s" % __version__,
        "",
        "_synguard_ifaces() {",
        '    COMPREPLY=($(compgen -W "$(command ls /sys/class/net 2>/dev/null)" -- "$cur"))',
        "}",
        "",
        "_synguard() {",
        "    local cur prev words cword",
        "    _init_completion || return",
        "    local i ci=0 cmd='' npos=0",
        "    for ((i = 1; i < cword; i++)); do",
        "        if [[ ${words[i]} != -* ]]; then",
        "            cmd=${words[i]} ci=$i",
        "            break",
        "        fi",
        "    done",
        "    if [[ -z $cmd ]]; then",
        '        COMPREPLY=($(compgen -W "%s" -- "$cur"))' % " ".join([n for n, _, _ in cmds] + top),
        "        return",
        "    fi",
        "    case $cmd in",
    ]
    for name, _, sp in cmds:
        opts = options(sp)
        flags = [o for a in opts for o in a.option_strings]
        valued = [a for a in opts if a.option_strings and a.nargs != 0]
        pos = [a for a in opts if not a.option_strings]
        out.append("    %s)" % name)
        if valued:
            out.append("        case $prev in")
            for a in valued:
                out.append(
                    "            %s) %s; return ;;" % ("|".join(a.option_strings), value_completion(a))
                )
            out.append("        esac")
        out.append("        if [[ $cur == -* ]]; then")
        out.append('            COMPREPLY=($(compgen -W "%s" -- "$cur"))' % " ".join(flags))
        out.append("            return")
        out.append("        fi")
        if pos:
            # Which positional the cursor is on: words after the command that
            # are neither flags nor a valued flag's value.
            takes_value = "|".join(o for a in valued for o in a.option_strings)
            out.append("        for ((i = ci + 1; i < cword; i++)); do")
            out.append("            case ${words[i]} in")
            if takes_value:
                out.append("                %s) ((i++)) ;;" % takes_value)
            out.append("                -*) ;;")
            out.append("                *) ((npos++)) ;;")
            out.append("            esac")
            out.append("        done")
            out.append("        case $npos in")
            for n, a in enumerate(pos):
                kind = positional_kind(a)
                last = a.nargs in ("+", "*") and n == len(pos) - 1
                label = "*" if last else str(n)
                if kind == "iface":
                    out.append("            %s) _synguard_ifaces ;;" % label)
                elif kind == "file":
                    out.append("            %s) _filedir ;;" % label)
                elif kind == "setting":
                    words = " ".join(s + "=" for s in SETTINGS)
                    out.append(
                        '            %s) compopt -o nospace; COMPREPLY=($(compgen -W "%s" -- "$cur")) ;;'
                        % (label, words)
                    )
            out.append("        esac")
        out.append("        ;;")
    out += ["    esac", "}", "complete -F _synguard synguard", ""]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="gen_docs.py", description="synguard's man page or bash completion")
    ap.add_argument("what", choices=("man", "bash"))
    ap.add_argument("--date", default="", help="the man page's date (YYYY-MM-DD)")
    args = ap.parse_args(argv)
    sys.stdout.write(man_page(args.date) if args.what == "man" else bash_completion())
    return 0


if __name__ == "__main__":
    sys.exit(main())
