"""synguard: SYN cookies and the FreeBSD syncache at XDP for Linux TCP listeners.

usage:
  synguard attach IFACE --ports 80,443 [--mode auto|native|generic]
                  [--rotate-seconds 16] [--metrics-addr 127.0.0.1:9717 | --no-metrics]
                  [--force] [--fleet-key FILE] [--conntrack auto|noscale|off]
                  [--monitor] [--takeover] [--config FILE [--watch-config]]
                  [--SETTING VALUE ...]
  synguard status IFACE [--json]
  synguard list IFACE [--json]
  synguard set IFACE SETTING=VALUE [...] [--save]
  synguard detach IFACE [--now]
  synguard rotate IFACE          # a new cookie key now
  synguard top IFACE [INTERVAL [COUNT]]
  synguard keygen FILE
  synguard ebpf                  # print the C that attach compiles, and its cflags

examples:
  sudo synguard attach eth0 --ports 80,443       # protect until SIGINT/SIGTERM (then drain)
  sudo synguard status eth0 --json               # from another shell
  sudo synguard list eth0                        # half-open connections (SYN_RECEIVED)
  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard detach eth0                      # drains (32 s), also after a crash of attach
  sudo synguard set eth0 monitor=0               # from monitor mode to enforce, no detach
  sudo synguard top eth0 1 10                    # rates under attack, 10 lines
  curl -s 127.0.0.1:9717/metrics

IFACE is the interface's name in the network namespace synguard runs in;
each namespace protects its own (nsenter --net or ip netns exec).

exit codes: 0 ok; 1 runtime failure, and for status: not protected (the
reason on stderr); 2 bad input.
"""

import argparse
import glob
import json
import logging
import os
import shutil
import signal
import sys
import time

from . import __version__, attach, datapath, fleet, host, journal, layout, netlink
from .maps import Maps
from .options import DEFAULT_METRICS, UsageError, attach_options, format_ports
from .runstate import RUN_DIR, RunState, controller_lock_held, pin_dir, valid_ifname
from .settings import SETTINGS, current, num, parse_assignments, raw_fields, show

log = logging.getLogger("synguard")


class Failure(Exception):
    """A runtime failure the user can do something about: one line, exit 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, the way every other error reads
        raise UsageError(message)


IFACE_HELP = "the interface, by its name in this network namespace (eth0, bond0.100)"
JSON_HELP = "print everything as JSON (the text form leaves some of it out)"

SUBCOMMANDS = {
    # name: (one line, examples)
    "attach": (
        "protect the TCP listeners on IFACE's ports until SIGINT/SIGTERM (foreground)",
        """  sudo synguard attach eth0 --ports 80,443
  sudo synguard attach eth0 --config /etc/synguard/eth0.toml
  sudo synguard attach eth0 --ports 443 --mode generic --metrics-addr :9717
  sudo synguard attach eth0 --ports 443 --fleet-key /etc/synguard/fleet.key
  sudo synguard attach eth0 --ports 443 --cachelimit 50000 --ratelimit 200
  sudo synguard attach eth0 --ports 443 --monitor            # count what it would do, pass everything
  sudo synguard attach eth0 --config eth0.toml --takeover    # replace a running one without a gap

signals: SIGHUP reloads --config; SIGTERM/SIGINT drain, then detach (under a
systemd restart: hand over to the next controller); SIGQUIT or a second
SIGTERM stops at once; SIGUSR1 rotates the key.""",
    ),
    "status": (
        "whether IFACE is protected (the exit code), counters, syncache, key age, mode",
        """  sudo synguard status eth0
  sudo synguard status eth0 --json | jq .counters.badcookie
  sudo synguard status eth0 >/dev/null || echo not protected""",
    ),
    "list": (
        "the half-open connections in IFACE's syncache (SYN_RECEIVED), oldest first",
        """  sudo synguard list eth0
  sudo synguard list eth0 | head -20
  sudo synguard list eth0 --json | jq -r '.[].remote'""",
    ),
    "set": (
        "change settings of a running protection (until its controller stops, or --save)",
        """  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard set eth0 ratelimit=200 --save    # also into its --config file
  sudo synguard set eth0 ratelimit=0             # no reflection limit
  sudo synguard set eth0 syncookies_only=1""",
    ),
    "detach": (
        "remove everything synguard attached to IFACE, after a drain (stopping its controller first)",
        """  sudo synguard detach eth0          # new SYNs to the kernel now, handshakes in flight complete
  sudo synguard detach eth0 --now    # no drain: handshakes synguard answered get an RST
  sudo nsenter --net=/run/netns/web synguard detach eth0""",
    ),
    "rotate": (
        "rotate IFACE's cookie key now (the running controller does it)",
        """  sudo synguard rotate eth0""",
    ),
    "top": (
        "per-second rates of what matters under attack, read from IFACE's maps",
        """  sudo synguard top eth0                         # a refreshing screen; q or Ctrl-C ends it
  sudo synguard top eth0 1 10                    # 10 lines, one a second, as vmstat
  sudo synguard top eth0 5 | ts                  # not a terminal: lines until stopped""",
    ),
    "keygen": (
        "write a new fleet master key file (mode 0600; never overwrites)",
        """  sudo synguard keygen /etc/synguard/fleet.key
  sudo install -m 0600 /etc/synguard/fleet.key /mnt/other-host/etc/synguard/""",
    ),
    "ebpf": (
        "print the C that attach compiles, with its cflags",
        """  synguard ebpf | less""",
    ),
}


def bare_usage():
    """What a bare `synguard` prints: every command on a line."""
    usage = __doc__.split("\n\n")[1]
    width = max(map(len, SUBCOMMANDS))
    lines = "".join("  %-*s  %s\n" % (width, name, line) for name, (line, _) in SUBCOMMANDS.items())
    return (
        "%s\n\ncommands:\n%s\n"
        "synguard COMMAND --help describes one command; synguard --help all of them.\n" % (usage, lines)
    )


def build_parser():
    settings_help = (
        "settings (the seed's sysctls; attach --NAME VALUE, or set NAME=VALUE at run time):\n"
        + "".join("  %-16s %s\n" % (name, s.help) for name, s in SETTINGS.items())
    )
    p = Parser(
        prog="synguard",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + settings_help,
    )
    p.add_argument("--version", action="version", version="synguard " + __version__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def command(name, epilog_extra=""):
        line, examples = SUBCOMMANDS[name]
        return sub.add_parser(
            name,
            help=line,
            description=line[0].upper() + line[1:] + ".",
            epilog="examples:\n" + examples + "\n" + epilog_extra,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def iface(parser):
        parser.add_argument("iface", metavar="IFACE", help=IFACE_HELP)

    a = command("attach", "\n" + settings_help)
    iface(a)
    a.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of these options (flags win; deploy/synguard.example.toml)",
    )
    a.add_argument(
        "--ports",
        metavar="PORTS",
        help="ports to protect: 80,443,8000-8010 (required here or in --config)",
    )
    a.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        help="XDP mode: native (driver), generic (skb); default auto: native where the driver has it",
    )
    a.add_argument(
        "--rotate-seconds",
        type=float,
        metavar="SECONDS",
        help="cookie key rotation period, 1..3600 (default 16, the seed's SYNCOOKIE_LIFETIME)",
    )
    m = a.add_mutually_exclusive_group()
    m.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="Prometheus /metrics on HOST:PORT, [V6]:PORT, or :PORT for every address "
        "(default %s)" % DEFAULT_METRICS,
    )
    m.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    a.add_argument("--force", action="store_true", help="replace another XDP program on IFACE")
    a.add_argument(
        "--takeover",
        action="store_true",
        help="IFACE's running controller hands its data path over to this one, which swaps in its own "
        "(an upgrade) without a gap; a rolling update starts the new one first",
    )
    a.add_argument(
        "--watch-config",
        action="store_true",
        help="reload when the --config file changes (a Kubernetes ConfigMap), as on SIGHUP",
    )
    a.add_argument(
        "--conntrack",
        choices=("auto", "noscale", "off"),
        help="where the firewall would drop handed-off connections: auto (default) makes their "
        "conntrack entries and sets nf_conntrack_tcp_be_liberal=1 while attached; noscale makes them "
        "and offers no window scale instead; off refuses to attach",
    )
    a.add_argument(
        "--cookies",
        choices=("auto", "synguard", "kernel"),
        help="whose SYN cookies answer: synguard (ours, Linux >= 6.9), kernel (the kernel's own, "
        "Linux >= 5.3; no fleet mode, no key rotation); default auto: synguard where the kernel can",
    )
    a.add_argument(
        "--fleet-key",
        metavar="FILE",
        help="derive the keys from this fleet's master key (root only, 0600): hosts behind one "
        "address validate each other's cookies (default: a random key per host)",
    )
    for name, s in SETTINGS.items():
        if s.flag:  # a switch: --monitor; monitor = 0|1 in the file and in set
            a.add_argument("--" + name, dest="set_" + name, action="store_const", const="1", help=s.help[3:])
            continue
        default = s.show(layout.SETTING_DEFAULTS[s.field])
        a.add_argument(
            "--" + name.replace("_", "-"),
            dest="set_" + name,
            metavar="VALUE",
            help="%s (%s..%s, default %s)" % (s.help, num(s.lo), num(s.hi), num(default)),
        )

    for name in ("status", "list"):
        c = command(name)
        iface(c)
        c.add_argument("--json", action="store_true", help=JSON_HELP)

    st = command("set", "\n" + settings_help)
    iface(st)
    st.add_argument(
        "assignments", nargs="+", metavar="SETTING=VALUE", help="one or more settings (listed below)"
    )
    st.add_argument(
        "--save",
        action="store_true",
        help="also write them into the [settings] of the config file the controller was started with "
        "(attach --config), keeping its other lines and comments; first the file, then the live "
        "change: if either fails, neither is changed",
    )

    d = command("detach")
    iface(d)
    d.add_argument(
        "--now",
        action="store_true",
        help="no drain: take everything off at once (handshakes synguard answered and that have not "
        "completed get an RST)",
    )
    iface(command("rotate"))

    t = command("top")
    iface(t)
    t.add_argument(
        "interval", nargs="?", default="1", metavar="INTERVAL", help="seconds between lines (default 1)"
    )
    t.add_argument(
        "count",
        nargs="?",
        metavar="COUNT",
        help="lines to print, then exit (default: until Ctrl-C; a refreshing screen on a terminal)",
    )

    k = command("keygen")
    k.add_argument("file", metavar="FILE", help="the key file to create (it must not exist)")

    command("ebpf")
    return p


def cmd_attach(args):
    from . import daemon

    return daemon.run(attach_options(args), reread=(lambda: attach_options(args)) if args.config else None)


def checked_iface(iface):
    if not valid_ifname(iface):
        raise UsageError("invalid interface name %r" % iface)
    return iface


def open_maps(iface):
    """The pinned maps of iface in this network namespace, or None."""
    pins = pin_dir(checked_iface(iface))
    if not os.path.isdir(pins):
        return None
    return Maps(pins)


def cmd_status(args):
    from .listeners import mptcp_ports
    from .status import protection, snapshot

    protected, reason, state = protection(checked_iface(args.iface))
    maps = open_maps(args.iface) if state else None
    if maps is None:
        print("synguard: %s is not protected: %s" % (args.iface, reason), file=sys.stderr)
        return 1
    with maps:
        st = {"protected": protected, "reason": reason, **snapshot(maps, state)}
    st["controller_running"] = state.controller_alive()
    st["mptcp_ports"] = mptcp_ports(st["ports"])
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print_status(st)
    if not protected:
        print("synguard: %s is not protected: %s" % (args.iface, reason), file=sys.stderr)
        return 1
    return 0


def print_status(st):
    print(
        "%s: %s, %s XDP, ports %s%s"
        % (
            st["interface"],
            "protected" if st["protected"] else "NOT protected",
            st["mode"],
            format_ports(st["ports"]),
            " (MPTCP listeners, left to the kernel: %s)" % format_ports(st["mptcp_ports"])
            if st["mptcp_ports"]
            else "",
        )
    )
    if st["reason"]:
        print("  %s" % st["reason"])
    if st["monitor"]:
        print(
            "  MONITOR mode: every frame is counted as enforce mode would judge it, and passed to the kernel"
        )
    print("controller: %s" % ("pid %d" % st["controller_pid"] if st["controller_running"] else "not running"))
    if st["cookies"] == "kernel":
        print("cookies: the kernel's (its own per-boot secret; bpf_tcp_gen_syncookie)")
    else:
        print(
            "cookies: synguard's, key %.1f s old, %d rotations" % (st["key_age_seconds"], st["key_rotations"])
        )
    sc = st["syncache"]
    print(
        "syncache: %d entries (limit %d), %s"
        % (
            sc["entries"],
            st["settings"]["cachelimit"],
            "PAUSED (cookies only) for %.1f s more" % sc["pause_remaining_seconds"]
            if sc["paused"]
            else "active",
        )
    )
    print("settings: " + show(st["settings"]))
    if st["sysctls_changed"]:
        print(
            "changed while attached: " + " ".join("%s (was %s)" % kv for kv in st["sysctls_changed"].items())
        )
    width = max(map(len, st["counters"]))
    for name, value in st["counters"].items():
        print("  %-*s %d" % (width, name, value))


def cmd_list(args):
    from .syncache import describe

    maps = open_maps(args.iface)
    if maps is None:
        print("synguard: %s is not protected" % args.iface, file=sys.stderr)
        return 1
    with maps:
        now = time.monotonic_ns()
        rows = sorted(
            (describe(k, e, now) for k, e in maps.syncache.items()), key=lambda r: -r["age_seconds"]
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for line in list_lines(rows):
        print(line)
    return 0


LIST_WIDTH = 100


def list_lines(rows, width=LIST_WIDTH):
    """The text table of `list`: columns as wide as their widest value, as
    ss has them, so that rows fit 100 columns; a row with long IPv6
    addresses has its options on a line of their own, indented. Every entry
    is SYN_RECEIVED (the help says so). --json has every field."""

    def options(r):
        opts = ["mss:%d" % r["mss"]]
        if r["wscale"] is not None:
            opts.append("ws:%d" % r["wscale"])
        opts += [short for o, short in LIST_OPTIONS if r[o]]
        return " ".join(opts)

    table = [
        (
            "tcp6" if r["family"] == "inet6" else "tcp4",
            r["local"],
            r["remote"],
            "%.1fs" % r["age_seconds"],
            str(r["retransmits"]),
            options(r),
        )
        for r in rows
    ]
    head = ("Net", "Local Address:Port", "Peer Address:Port", "Age", "Rx", "Options")
    # Columns as wide as the rows that fit on their own need: a longer one
    # (IPv6 addresses) does not widen everyone else's.
    fits = [t for t in table if len(" ".join(t)) <= width]
    widths = [max([len(h)] + [len(t[i]) for t in fits]) for i, h in enumerate(head)]
    align = ("<", "<", "<", ">", ">", "<")
    for t in [head] + table:
        cells = [format(v, a + str(w)) for v, a, w in zip(t[:-1], align, widths)]
        line = " ".join(cells + [t[-1]]).rstrip()
        if len(line) <= width:
            yield line
        else:
            yield " ".join(cells).rstrip()
            yield "    " + t[-1]


LIST_OPTIONS = (("sack", "sack"), ("timestamps", "ts"), ("ecn", "ecn"), ("unreach", "unreach"))


def cmd_set(args):
    from . import liveconfig

    try:
        changes = parse_assignments(args.assignments)
    except ValueError as e:
        raise UsageError(str(e)) from None
    maps = open_maps(args.iface)
    state = RunState.load(args.iface)
    if maps is None or state is None:
        raise UsageError("%s is not protected" % args.iface)
    with maps:
        old = raw_fields(maps.config.lookup(0))
        settings = {**old, **changes}
        try:
            liveconfig.check(maps, state, settings)
        except liveconfig.ConfigRefused as e:
            raise UsageError(str(e)) from None
        # --save: the new config file is written beside the old one first
        # (where a read-only or full disk fails, nothing changed yet), then
        # the live change, then the rename; if the rename fails, the live
        # settings are put back.
        pending, flag_settings = save_plan(args.iface, changes) if args.save else (None, [])
        try:
            cfg = liveconfig.apply(maps, state, settings)
            if pending:
                try:
                    pending.commit()
                except ValueError as e:
                    liveconfig.apply(maps, state, old)
                    raise UsageError("--save: %s; nothing changed" % e) from None
        finally:
            if pending:
                pending.discard()
        print("synguard: %s: %s" % (args.iface, show(current(cfg))))
    if not pending:
        print(
            "synguard: %s"
            % (
                "this lasts until the controller reloads or stops (both start from its flags and --config): "
                "--save writes it into the config file"
                if state.controller_alive()
                else "no controller runs: the data path keeps this until the next attach, which starts "
                "from its flags and --config (--save writes it into the config file)"
            ),
            file=sys.stderr,
        )
        return 0
    names = [name for name, s in SETTINGS.items() if s.field in changes]
    print(
        "synguard: %s: saved %s in %s"
        % (args.iface, " ".join("%s=%s" % (n, pending.values[n]) for n in names), pending.path)
    )
    flags = [n for n in names if n in flag_settings]
    if flags:
        print(
            "synguard: warning: the controller's command line has %s, which wins over %s when it "
            "starts again" % (", ".join("--" + n.replace("_", "-") for n in flags), pending.path),
            file=sys.stderr,
        )
    return 0


def save_plan(iface, changes):
    """(configedit.Pending, the settings the controller had as flags) for
    `set --save`: the config file of iface's controller with changes
    ({sg_config field: raw}) in its [settings]."""
    from . import configedit

    state = RunState.load(iface)
    if state is None or not state.config:
        raise UsageError(
            "--save: the controller of %s was started without --config, so there is no file to save "
            "into: start it with attach %s --config FILE (deploy/synguard.example.toml), or leave out --save"
            % (iface, iface)
        )
    if not state.same_pid_ns():
        raise UsageError(
            "--save: the controller of %s runs in another PID namespace (a container?), where its config "
            "file %s is: run set --save there" % (iface, state.config)
        )
    values = {
        name: configedit.literal(name, changes[s.field]) for name, s in SETTINGS.items() if s.field in changes
    }
    try:
        pending = configedit.prepare(state.config, values)
    except ValueError as e:
        raise UsageError("--save: %s; nothing changed" % e) from None
    return pending, state.flag_settings


def attached_things(ifname, state):
    """What of synguard's is on ifname now, as detach names it."""
    things = []
    idx = netlink.ifindex(ifname)
    if idx and state and state.ifindex == idx:
        xdp_id, _ = netlink.xdp_query(idx)
        if xdp_id and xdp_id == state.xdp_prog_id:
            things.append("XDP program %d" % xdp_id)
        tc_id = netlink.tc_query(idx, attach.TC_HANDLE, attach.TC_PRIORITY)
        if tc_id and tc_id == state.tc_prog_id:
            things.append("tc filter %d" % tc_id)
    if os.path.isdir(pin_dir(ifname)):
        things.append("the pins")
    if RunState.load(ifname):
        things.append("the run state")
    return things


def wait_exited(pid, timeout=10.0):
    """The controller drops its lock before it has finished detaching: wait
    until the process is gone (or a zombie), so that what it removed can be
    told and nothing is removed twice at once. True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            return True
        time.sleep(0.02)
    return False


def protected_elsewhere(ifname):
    """[(netns inode, pid)] of running controllers of an interface of this
    name in other network namespaces."""
    found = []
    for path in glob.glob(os.path.join(RUN_DIR, "*", glob.escape(ifname) + ".json")):
        nsid = os.path.basename(os.path.dirname(path))
        if nsid == str(host.netns_id()) or not controller_lock_held(path):
            continue
        try:
            with open(path) as f:
                found.append((nsid, json.load(f).get("pid")))
        except (OSError, ValueError, AttributeError):
            found.append((nsid, None))
    return found


def elsewhere_hint(ifname):
    hints = [
        "a controller (pid %s) protects %s in network namespace %s: run detach there "
        "(nsenter --net=/proc/%s/ns/net synguard detach %s)" % (pid, ifname, nsid, pid, ifname)
        for nsid, pid in protected_elsewhere(ifname)
    ]
    return "; ".join(hints)


def cmd_detach(args):
    checked_iface(args.iface)
    if os.geteuid() != 0:
        raise UsageError("detaching needs root (CAP_BPF, CAP_NET_ADMIN)")
    state = RunState.load(args.iface)
    # netlink, not /sys/class/net: after join_host_mounts /sys may be the
    # host namespace's sysfs, which does not list this namespace's interfaces.
    if not state and not os.path.isdir(pin_dir(args.iface)) and not netlink.ifindex(args.iface):
        hint = elsewhere_hint(args.iface)
        raise UsageError(
            "no interface %s here, and nothing of synguard's for it%s"
            % (args.iface, "; " + hint if hint else "")
        )
    done = []
    said = lambda line: print("synguard: %s: %s" % (args.iface, line), flush=True)  # noqa: E731
    if state and state.controller_alive() and state.pid != os.getpid():
        # The controller takes its own things down and sets sysctls back:
        # what it removed is what was there before and is gone after.
        before = attached_things(args.iface, state)
        if attach.stop_controller(state, args.now, said) and wait_exited(state.pid):
            gone = [t for t in before if t not in attached_things(args.iface, state)]
            restored = [
                "%s=%s" % (name, value)
                for name, value in state.sysctls.items()
                if host.read_sysctl(name) == value.split()
            ]
            said = "stopped the controller (pid %d), which removed %s" % (
                state.pid,
                ", ".join(gone) or "nothing",
            )
            if restored:
                said += " and set back " + ", ".join(restored)
            done.append(said)
        else:
            done.append("the controller (pid %d) did not stop" % state.pid)
    elif state and not args.now:
        drain_orphan(args.iface, state, said)
    left = attach.detach(args.iface)
    if left:
        done.append(left)
    if not done:
        hint = elsewhere_hint(args.iface)
        done.append("nothing attached" + ("; " + hint if hint else ""))
    print("synguard: %s: %s" % (args.iface, "; ".join(done)))
    return 0


def drain_orphan(iface, state, said):
    """The drain of a data path whose controller is gone (a crash): new
    SYNs to the kernel, cookies and entries already issued still handed
    off, until the keys they were minted with have rotated out (nobody
    rotates now, so: two periods from the last rotation) or at most
    DRAIN_MAX_SECONDS."""
    from . import daemon, liveconfig
    from .status import protection

    protected, _, _ = protection(iface)
    maps = open_maps(iface)
    if not protected or maps is None:
        return
    with maps:
        age = (time.monotonic_ns() - maps.secrets.lookup(0).rotated_ns) / 1e9
        seconds = max(0.0, min(daemon.DRAIN_MAX_SECONDS, 2 * state.rotate_seconds - age))
        if not seconds:
            return
        state.phase, state.drain_until = "draining", time.time() + seconds
        liveconfig.apply(maps, state, raw_fields(maps.config.lookup(0)))
        state.save()
        said(
            "no controller runs; draining: new SYNs go to the kernel; handshakes synguard answered "
            "complete for %.0f s (detach --now skips this)" % seconds
        )
        time.sleep(seconds)


def controller_of(iface, command):
    """The run state of iface's running controller, in this PID namespace."""
    checked_iface(iface)
    if os.geteuid() != 0:
        raise UsageError("%s needs root (CAP_BPF, CAP_NET_ADMIN)" % command)
    state = RunState.load(iface)
    if state is None or not os.path.isdir(pin_dir(iface)):
        raise UsageError("%s is not protected" % iface)
    if not state.controller_alive():
        raise Failure(
            "no controller runs for %s (keys rotate only while one does): start attach, which adopts "
            "the data path" % iface
        )
    if state.phase != "protecting":
        raise Failure("attach on %s is still under way" % iface)
    if not state.same_pid_ns():
        raise UsageError(
            "the controller of %s runs in another PID namespace (a container?): run this there" % iface
        )
    return state


def cmd_rotate(args):
    """The controller is the one writer of the secrets map: it rotates on
    SIGUSR1 in its own loop, exactly as on time (the idle slot, then the
    flip), so two rotations never interleave. This waits until the map says
    it happened."""
    state = controller_of(args.iface, "rotate")
    if state.cookies == "kernel":
        raise UsageError(
            "%s answers with the kernel's cookies, whose secret is the kernel's own: nothing to rotate"
            % args.iface
        )
    with Maps(state.pins) as maps:
        s = maps.secrets.lookup(0)
        if s.fleet:
            raise UsageError(
                "%s is in fleet mode: its keys come from the fleet's master key (change it with "
                "next_key in the key file), not from here" % args.iface
            )
        if not attach.catches(state.pid, signal.SIGUSR1):
            raise Failure(
                "the controller of %s (pid %d) predates synguard rotate: restart it" % (args.iface, state.pid)
            )
        before = s.rotations
        os.kill(state.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            s = maps.secrets.lookup(0)
            if s.rotations != before:
                print(
                    "synguard: %s: new cookie key (rotation %d, from pid %d); cookies minted with the one "
                    "before stay valid for one more period (%ss)"
                    % (args.iface, s.rotations, state.pid, num(state.rotate_seconds))
                )
                return 0
            time.sleep(0.02)
    raise Failure("the controller of %s (pid %d) did not rotate within 5 s" % (args.iface, state.pid))


TOP_COLUMNS = (
    # header, counters summed, what it is
    ("answered/s", ("sendcookie", "dupsyn"), "SYNs answered (cookie SYN-ACKs and syncache resends)"),
    ("ratelimited/s", ("ratelimited",), "SYNs dropped by the reflection limit"),
    # In both cookie modes: each recvcookie or expanded ACK ends as a socket
    # (tc's completed, or the kernel's own cookie check), aborted or raced.
    (
        "handoffs/s",
        ("recvcookie", "expanded", "-aborted", "-raced"),
        "handshakes handed to the kernel",
    ),
    ("badacks/s", ("badcookie",), "ACKs with a bogus cookie, dropped"),
)


def top_args(args):
    try:
        interval = float(args.interval)
    except ValueError:
        interval = None
    if interval is None or not 0.1 <= interval <= 3600:
        raise UsageError("INTERVAL must be seconds within 0.1..3600, not %r" % args.interval)
    count = None
    if args.count is not None:
        if not args.count.isdigit() or int(args.count) < 1:
            raise UsageError("COUNT must be a whole number of lines, at least 1, not %r" % args.count)
        count = int(args.count)
    return interval, count


def top_sample(maps):
    from .syncache import status

    return time.monotonic(), maps.read_counters(), status(maps), maps.config.lookup(0).cachelimit


def _delta(before, after, name):
    """after - before of counter name; of -name, its negation."""
    sign, name = (-1, name[1:]) if name.startswith("-") else (1, name)
    return sign * (after[name] - before[name])


def _formula(names):
    """('a', 'b', '-c') -> 'a + b - c'."""
    out = names[0]
    for n in names[1:]:
        out += " - " + n[1:] if n.startswith("-") else " + " + n
    return out


def top_rates(a, b):
    """[per-second rates of TOP_COLUMNS], entries, limit, paused between samples a and b."""
    dt = max(b[0] - a[0], 1e-9)
    rates = [sum(_delta(a[1], b[1], n) for n in names) / dt for _, names, _ in TOP_COLUMNS]
    return rates, b[2]["entries"], b[3], b[2]["paused"]


def cmd_top(args):
    interval, count = top_args(args)
    maps = open_maps(args.iface)
    if maps is None:
        raise UsageError("%s is not protected" % args.iface)
    if count is None and sys.stdout.isatty():
        return top_screen(args.iface, interval, maps)
    heads = [h for h, _, _ in TOP_COLUMNS] + ["entries", "paused"]
    widths = [max(len(h), 9) for h in heads]
    try:
        with maps:
            last = top_sample(maps)
            print(" ".join("%*s" % (w, h) for w, h in zip(widths, heads)), flush=True)
            n = 0
            while count is None or n < count:
                time.sleep(max(0.0, last[0] + interval - time.monotonic()))
                now = top_sample(maps)
                rates, entries, limit, paused = top_rates(last, now)
                last = now
                n += 1
                values = ["%.0f" % r for r in rates] + [str(entries), "yes" if paused else "no"]
                print(" ".join("%*s" % (w, v) for w, v in zip(widths, values)), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def top_screen(iface, interval, maps):
    """The refreshing screen until q, Ctrl-C, SIGTERM or SIGHUP; the
    terminal is restored whichever it was (terminal.Screen)."""
    from .terminal import Screen

    with maps, Screen() as screen:
        last = top_sample(maps)
        screen.draw(top_lines(iface, interval, None, last[2]["entries"], last[3], last[2]["paused"]))
        while not screen.wait(max(0.0, last[0] + interval - time.monotonic())):
            now = top_sample(maps)
            screen.draw(top_lines(iface, interval, *top_rates(last, now)))
            last = now
    return 0


def top_lines(iface, interval, rates, entries, limit, paused):
    """The screen's lines; rates None before the first interval is over."""
    cols = shutil.get_terminal_size().columns
    lines = [
        "synguard top %s, every %ss (q or Ctrl-C ends)  %s"
        % (iface, num(interval), time.strftime("%H:%M:%S")),
        "",
    ]
    for (head, names, what), rate in zip(TOP_COLUMNS, rates or [None] * len(TOP_COLUMNS)):
        shown = "%12.0f/s" % rate if rate is not None else "%12s/s" % "-"
        lines.append("%s  %s (%s)" % (shown, what, _formula(names)))
    lines.append("%12d    syncache entries (limit %d)" % (entries, limit))
    lines.append("%12s    syncache paused (cookies only)" % ("yes" if paused else "no"))
    return [line[:cols] for line in lines]


def cmd_keygen(args):
    """A new master key in a file only root can read; never overwrites."""
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            "%s already exists%s: keygen never overwrites" % (args.file, _what_is(args.file))
        ) from None
    except OSError as e:
        raise UsageError("cannot create %s: %s" % (args.file, e.strerror)) from None
    with os.fdopen(fd, "w") as f:
        f.write(fleet.generate())
    print(
        "synguard: wrote a new fleet master key to %s (mode 0600): copy it to every host of the fleet"
        % args.file
    )
    return 0


def _what_is(path):
    import stat

    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISLNK(mode):
        return " (a symlink%s)" % ("" if os.path.exists(path) else ", dangling")
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return " (%s)" % name
    return ""


def cmd_ebpf(args):
    flags = datapath.cflags(
        pin_dir("IFACE"), layout.syncache_map_size(layout.SYNCACHE_DEFAULTS["cachelimit"])
    )
    print("// cflags: %s" % " ".join(flags))
    print("// with the kernel's cookies (--cookies kernel) also -DSG_KERNEL_COOKIES")
    print(datapath.source_text())
    return 0


COMMANDS = {
    "attach": cmd_attach,
    "status": cmd_status,
    "list": cmd_list,
    "set": cmd_set,
    "detach": cmd_detach,
    "rotate": cmd_rotate,
    "top": cmd_top,
    "keygen": cmd_keygen,
    "ebpf": cmd_ebpf,
}


def main(argv=None):
    journal.setup()  # "synguard: ...", with <N> priorities when stderr is the journal
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write(bare_usage())
        return 2
    command = argv[0]
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("attach", "status", "list", "set", "detach", "rotate", "top"):
            try:
                host.join_host_mounts()
            except OSError as e:
                raise UsageError(
                    "this mount namespace has a bpffs of its own (ip netns exec makes one per command), "
                    "where pins would be lost, and %s: run synguard as full root, or with "
                    "nsenter --net=/run/netns/NAME" % e.strerror
                ) from None
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # `synguard list eth0 | head -1`: the reader is gone, which is fine.
        # Point stdout at /dev/null so that the flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, attach.AttachError) as e:
        print(journal.error_line(e), file=sys.stderr)
        return 2
    except Failure as e:
        print(journal.error_line(e), file=sys.stderr)
        return 1
    except PermissionError:
        # EPERM/EACCES from bpf(2), netlink or a pin: not worth a path
        print(journal.error_line("%s needs root (CAP_BPF, CAP_NET_ADMIN)" % command), file=sys.stderr)
        return 2
    except OSError as e:
        print(journal.error_line(e.strerror or e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # Never a traceback on the terminal; SYNGUARD_DEBUG=1 shows it.
        if os.environ.get("SYNGUARD_DEBUG"):
            raise
        why = "internal error (%s: %s); SYNGUARD_DEBUG=1 shows where" % (type(e).__name__, e)
        print(journal.error_line(why), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
