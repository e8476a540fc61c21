"""synguard: SYN cookies and the FreeBSD syncache at XDP for Linux TCP listeners.

The command line: one registry of commands (each module declares its own:
name, summary, synopsis, examples, arguments, handler), one table of exit
codes, one place that turns every error into its one line and code.
"""

import argparse
import os
import sys

from .. import __version__, attach, host, journal, running
from ..options import UsageError
from . import attach_command, change, look, tools
from .common import BAD_INPUT, EXIT_CODES, FAILED, OK, Failure, Parser

REGISTRY = attach_command.COMMANDS + look.COMMANDS[:2] + change.COMMANDS + look.COMMANDS[2:] + tools.COMMANDS
COMMANDS = {c.name: c for c in REGISTRY}

EXAMPLES = """  sudo synguard attach eth0 --ports 80,443       # protect until SIGINT/SIGTERM (then drain)
  sudo synguard status eth0 --json               # from another shell
  sudo synguard list eth0                        # half-open connections (SYN_RECEIVED)
  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard set eth0 monitor=0               # from monitor mode to enforce, no detach
  sudo synguard detach eth0                      # drains (32 s), also after a crash of attach
  sudo synguard top eth0 1 10                    # rates under attack, 10 lines
  curl -s 127.0.0.1:9717/metrics"""

NOTES = """IFACE is the interface's name in the network namespace synguard runs in;
each namespace protects its own (nsenter --net or ip netns exec)."""


def usage():
    """The synopsis of every command, from the registry."""
    lines = []
    for c in REGISTRY:
        first, *rest = ("synguard %s %s" % (c.name, c.synopsis)).rstrip().split("\n")
        lines.append("  " + first)
        lines += ["  " + line for line in rest]
    return "usage:\n" + "\n".join(lines)


def exit_codes():
    return "exit codes:\n" + "".join("  %d  %s\n" % row for row in EXIT_CODES)


def bare_usage():
    """What a bare `synguard` prints: every command on a line."""
    width = max(len(c.name) for c in REGISTRY)
    lines = "".join("  %-*s  %s\n" % (width, c.name, c.summary) for c in REGISTRY)
    return (
        "%s\n\ncommands:\n%s\n"
        "synguard COMMAND --help describes one command; synguard --help all of them.\n" % (usage(), lines)
    )


def build_parser():
    p = Parser(
        prog="synguard",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="%s\n\nexamples:\n%s\n\n%s\n\n%s\n%s"
        % (usage(), EXAMPLES, NOTES, exit_codes(), attach_command.SETTINGS_HELP),
    )
    p.add_argument("--version", action="version", version="synguard " + __version__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for c in REGISTRY:
        c.arguments(
            sub.add_parser(
                c.name,
                help=c.summary,
                description=c.summary[0].upper() + c.summary[1:] + ".",
                epilog="examples:\n%s\n\n%s%s"
                % (c.examples, exit_codes(), "\n" + c.epilog if c.epilog else ""),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    return p


def main(argv=None):
    journal.setup()  # "synguard: ...", with <N> priorities when stderr is the journal
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write(bare_usage())
        return BAD_INPUT
    command = argv[0]
    try:
        args = build_parser().parse_args(argv)
        if COMMANDS[args.command].host_mounts:
            join_host_mounts()
        return COMMANDS[args.command].run(args)
    except BrokenPipeError:
        # `synguard list eth0 | head -1`: the reader is gone, which is fine.
        # Point stdout at /dev/null so that the flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # every error: one line, its exit code
        code, line = error(e, command)
        print(journal.error_line(line), file=sys.stderr)
        return code


def error(e, command):
    """(exit code, line) for an error of command: the one table."""
    if isinstance(e, (UsageError, attach.AttachError, running.Elsewhere)):
        return BAD_INPUT, e
    if isinstance(e, (Failure, attach.AttachFailed)):
        return FAILED, e
    if isinstance(e, PermissionError):
        # EPERM/EACCES from bpf(2), netlink or a pin: not worth a path
        return BAD_INPUT, "%s needs root (CAP_BPF, CAP_NET_ADMIN)" % command
    if isinstance(e, OSError):
        return FAILED, e.strerror or e
    # Never a traceback on the terminal; SYNGUARD_DEBUG=1 shows it.
    if os.environ.get("SYNGUARD_DEBUG"):
        raise e
    return FAILED, "internal error (%s: %s); SYNGUARD_DEBUG=1 shows where" % (type(e).__name__, e)


def join_host_mounts():
    try:
        host.join_host_mounts()
    except OSError as e:
        raise UsageError(
            "this mount namespace has a bpffs of its own (ip netns exec makes one per command), "
            "where pins would be lost, and %s: run synguard as full root, or with "
            "nsenter --net=/run/netns/NAME" % e.strerror
        ) from None
