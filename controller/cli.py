"""synguard: SYN cookies and the FreeBSD syncache at XDP for Linux TCP listeners.

usage:
  synguard attach IFACE --ports 80,443 [--mode auto|native|generic]
                  [--rotate-seconds 16] [--metrics-addr 127.0.0.1:9717 | --no-metrics]
                  [--force] [--fleet-key FILE] [--conntrack auto|noscale|off]
                  [--config FILE] [--SETTING VALUE ...]
  synguard status IFACE [--json]
  synguard list IFACE [--json]
  synguard set IFACE SETTING=VALUE [...]
  synguard detach IFACE
  synguard keygen FILE
  synguard ebpf                  # print the C that attach compiles, and its cflags

examples:
  sudo synguard attach eth0 --ports 80,443       # protect until SIGINT/SIGTERM
  sudo synguard status eth0 --json               # from another shell
  sudo synguard list eth0                        # half-open connections (SYN_RECEIVED)
  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard detach eth0                      # also after a crash of attach
  curl -s 127.0.0.1:9717/metrics

IFACE is the interface's name in the network namespace synguard runs in;
each namespace protects its own (nsenter --net or ip netns exec).

exit codes: 0 ok; 1 runtime failure, and for status: not protected (the
reason on stderr); 2 bad input.
"""

import argparse
import json
import logging
import os
import sys
import time

from . import __version__, attach, datapath, fleet, host, journal, layout
from .maps import Maps
from .options import UsageError, attach_options, format_ports
from .runstate import RunState, pin_dir, valid_ifname
from .settings import SETTINGS, current, parse_assignments

log = logging.getLogger("synguard")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, the way every other error reads
        raise UsageError(message)


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
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    a = sub.add_parser("attach", help="protect listeners on an interface (foreground)")
    a.add_argument("iface")
    a.add_argument("--config", metavar="FILE", help="TOML file with any of these options (flags win)")
    a.add_argument("--ports", help="ports to protect: 80,443,8000-8010 (required here or in --config)")
    a.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        help="XDP mode: native (driver), generic (skb), auto (default): native where the driver has it",
    )
    a.add_argument(
        "--rotate-seconds",
        type=float,
        help="cookie key rotation period (default 16, the seed's SYNCOOKIE_LIFETIME)",
    )
    m = a.add_mutually_exclusive_group()
    m.add_argument("--metrics-addr", help="Prometheus /metrics on HOST:PORT (default 127.0.0.1:9717)")
    m.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    a.add_argument("--force", action="store_true", help="replace another XDP program on IFACE")
    a.add_argument(
        "--conntrack",
        choices=("auto", "noscale", "off"),
        help="where the firewall would drop handed-off connections: auto (default) makes their "
        "conntrack entries and sets nf_conntrack_tcp_be_liberal=1 while attached; noscale makes them "
        "and offers no window scale instead; off refuses to attach",
    )
    a.add_argument(
        "--fleet-key",
        metavar="FILE",
        help="derive the keys from this fleet's master key (root only, 0600): hosts behind one "
        "address validate each other's cookies",
    )
    for name, s in SETTINGS.items():
        a.add_argument("--" + name.replace("_", "-"), dest="set_" + name, metavar="VALUE", help=s.help)

    s = sub.add_parser("status", help="protected or not (exit code), counters, syncache, key age, mode")
    s.add_argument("iface")
    s.add_argument("--json", action="store_true")

    li = sub.add_parser("list", help="half-open connections in the syncache")
    li.add_argument("iface")
    li.add_argument("--json", action="store_true")

    st = sub.add_parser("set", help="change settings while attached")
    st.add_argument("iface")
    st.add_argument("assignments", nargs="+", metavar="SETTING=VALUE")

    d = sub.add_parser("detach", help="remove everything synguard attached to IFACE")
    d.add_argument("iface")

    k = sub.add_parser("keygen", help="write a new fleet master key file (0600)")
    k.add_argument("file")

    sub.add_parser("ebpf", help="print the C that attach compiles, with its cflags")
    return p


def cmd_attach(args):
    from . import daemon

    return daemon.run(attach_options(args))


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
    print("controller: %s" % ("pid %d" % st["controller_pid"] if st["controller_running"] else "not running"))
    print("cookie key: %.1f s old, %d rotations" % (st["key_age_seconds"], st["key_rotations"]))
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
    print("settings: " + " ".join("%s=%g" % kv for kv in st["settings"].items()))
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
    print(
        "%-6s %-46s %-46s %-12s %7s %5s  %s"
        % ("Proto", "Local Address", "Foreign Address", "State", "Age", "Rxmt", "Options")
    )
    for r in rows:
        opts = "mss %d" % r["mss"]
        if r["wscale"] is not None:
            opts += " wscale %d" % r["wscale"]
        opts += "".join(" " + o for o in ("sack", "timestamps", "ecn", "unreach") if r[o])
        print(
            "%-6s %-46s %-46s %-12s %6.1fs %5d  %s"
            % (
                "tcp6" if r["family"] == "inet6" else "tcp4",
                r["local"],
                r["remote"],
                r["state"],
                r["age_seconds"],
                r["retransmits"],
                opts,
            )
        )
    return 0


def cmd_set(args):
    try:
        changes = parse_assignments(args.assignments)
    except ValueError as e:
        raise UsageError(str(e)) from None
    maps = open_maps(args.iface)
    if maps is None:
        raise UsageError("%s is not protected" % args.iface)
    with maps:
        size = maps.syncache.max_entries
        if changes.get("cachelimit", 0) > size:
            raise UsageError(
                "cachelimit can grow to %d while attached (the syncache map's size, set by "
                "attach --cachelimit)" % size
            )
        cfg = maps.config.lookup(0)
        for field, value in changes.items():
            setattr(cfg, field, value)
        maps.config.update(0, cfg.derive())
        print("synguard: %s: %s" % (args.iface, " ".join("%s=%g" % kv for kv in current(cfg).items())))
    return 0


def cmd_detach(args):
    checked_iface(args.iface)
    if os.geteuid() != 0:
        raise UsageError("detaching needs root")
    state = RunState.load(args.iface)
    if (
        not state
        and not os.path.isdir(pin_dir(args.iface))
        and not os.path.exists("/sys/class/net/" + args.iface)
    ):
        raise UsageError("no interface %s here, and nothing of synguard's for it" % args.iface)
    done = []
    if state and state.controller_alive() and state.pid != os.getpid():
        # The controller takes its own things down and sets sysctls back.
        if attach.stop_controller(state):
            done.append("stopped the controller (pid %d), which detached" % state.pid)
        else:
            done.append("the controller (pid %d) did not stop" % state.pid)
    left = attach.detach(args.iface)
    if left:
        done.append(left)
    print("synguard: %s: %s" % (args.iface, "; ".join(done) if done else "nothing attached"))
    return 0


def cmd_keygen(args):
    """A new master key in a file only root can read; never overwrites."""
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise UsageError("cannot create %s: %s" % (args.file, e.strerror)) from None
    with os.fdopen(fd, "w") as f:
        f.write(fleet.generate())
    print(
        "synguard: wrote a new fleet master key to %s (mode 0600): copy it to every host of the fleet"
        % args.file
    )
    return 0


def cmd_ebpf(args):
    flags = datapath.cflags(
        pin_dir("IFACE"), layout.syncache_map_size(layout.SYNCACHE_DEFAULTS["cachelimit"])
    )
    print("// cflags: %s" % " ".join(flags))
    print(datapath.source_text())
    return 0


COMMANDS = {
    "attach": cmd_attach,
    "status": cmd_status,
    "list": cmd_list,
    "set": cmd_set,
    "detach": cmd_detach,
    "keygen": cmd_keygen,
    "ebpf": cmd_ebpf,
}


def main(argv=None):
    journal.setup()  # "synguard: ...", with <N> priorities when stderr is the journal
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("attach", "status", "list", "set", "detach"):
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
    except OSError as e:
        print(journal.error_line(e.strerror or e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
