"""synguard: SYN cookies and the FreeBSD syncache at XDP for Linux TCP listeners.

usage:
  synguard attach IFACE --ports 80,443 [--mode auto|native|generic]
                  [--rotate-seconds 16] [--metrics-addr 127.0.0.1:9717 | --no-metrics]
                  [--force] [--SETTING VALUE ...]
  synguard status IFACE [--json]
  synguard list IFACE [--json]
  synguard set IFACE SETTING=VALUE [...]
  synguard detach IFACE

examples:
  sudo synguard attach eth0 --ports 80,443       # protect until SIGINT/SIGTERM
  sudo synguard status eth0 --json               # from another shell
  sudo synguard list eth0                        # half-open connections (SYN_RECEIVED)
  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard detach eth0                      # also after a crash of attach
  curl -s 127.0.0.1:9717/metrics

exit codes: 0 ok, 1 runtime failure (status, list: not protected), 2 bad input.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from . import __version__, configfile, fleet, layout, libbpf, loader
from .settings import SETTINGS, current, parse_assignments

log = logging.getLogger("synguard")


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, the way every other error reads
        raise UsageError(message)


def parse_ports(text):
    """'80,443,8000-8010' -> sorted list; UsageError on anything else."""
    ports = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UsageError("invalid port %r" % part) from None
        if not (1 <= first <= last <= 65535):
            raise UsageError("port %r is outside 1..65535" % part)
        ports.update(range(first, last + 1))
    return sorted(ports)


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
        help="XDP mode: native (driver), generic (skb), auto (default): native, else generic",
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
        "--fleet-key",
        metavar="FILE",
        help="derive the keys from this fleet's master key (root only, 0600): hosts behind one "
        "address validate each other's cookies",
    )
    for name, s in SETTINGS.items():
        a.add_argument("--" + name.replace("_", "-"), dest="set_" + name, metavar="VALUE", help=s.help)

    s = sub.add_parser("status", help="counters, syncache, key age, mode")
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
    return p


def attach_options(args):
    """The attach options from the flags, then --config FILE, then the
    defaults: (ports, mode, rotate_seconds, metrics_addr or "", force,
    {sg_config field: value})."""
    try:
        conf = configfile.load(args.config) if args.config else {}
    except ValueError as e:
        raise UsageError(str(e)) from None

    def pick(name, default):
        value = getattr(args, name)
        return value if value is not None else conf.get(name, default)

    ports_text = pick("ports", None)
    if ports_text is None:
        raise UsageError("the following arguments are required: --ports (or ports in --config)")
    ports = parse_ports(ports_text)
    mode = pick("mode", "auto")
    if mode not in ("auto", "native", "generic"):
        raise UsageError("mode must be auto, native or generic, not %r" % mode)
    rotate_seconds = float(pick("rotate_seconds", 16.0))
    if not 1 <= rotate_seconds <= 3600:
        raise UsageError("--rotate-seconds must be within 1..3600")
    if args.no_metrics or (args.metrics_addr is None and conf.get("metrics") is False):
        metrics_addr = ""
    else:
        metrics_addr = pick("metrics_addr", "127.0.0.1:9717")
        from .metrics import parse_addr

        try:
            parse_addr(metrics_addr)
        except ValueError as e:
            raise UsageError("--metrics-addr: %s" % e) from None
    settings = dict(conf.get("settings", {}))
    for name in SETTINGS:
        if getattr(args, "set_" + name) is not None:
            settings[name] = getattr(args, "set_" + name)
    try:
        syncache_cfg = parse_assignments("%s=%s" % kv for kv in settings.items())
    except ValueError as e:
        raise UsageError(str(e)) from None
    fleet_key = pick("fleet_key", None)
    if fleet_key:
        try:
            fleet.load(fleet_key)
        except fleet.FleetKeyError as e:
            raise UsageError(str(e)) from None
    return (
        ports,
        mode,
        rotate_seconds,
        metrics_addr,
        args.force or conf.get("force", False),
        syncache_cfg,
        fleet_key,
    )


def cmd_attach(args):
    ports, mode, rotate_seconds, metrics_addr, force, syncache_cfg, fleet_key = attach_options(args)
    from .secrets import FleetRotator, KeyRotator

    def rotator(secrets_map):
        if fleet_key:
            return FleetRotator(secrets_map, rotate_seconds, fleet_key)
        return KeyRotator(secrets_map, rotate_seconds)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    syncookies = loader.read_sysctl("net.ipv4.tcp_syncookies", ["1"])[0]
    dp, maps, state, adopted = loader.attach(
        args.iface, ports, mode, force, rotate_seconds, metrics_addr, syncache_cfg, rotator
    )
    if adopted:
        st = maps.syncache_state.lookup(0)
        log.info(
            "adopted the data path left attached on %s (%s XDP): keys, %d syncache entries and counters "
            "kept%s",
            args.iface,
            state.mode,
            st.entries,
            "" if mode in ("auto", state.mode) else "; detach first to change the mode",
        )
    server = cache = None
    try:
        if syncookies == "0":
            # The kernel drops a request socket the hand-off made while this is 0.
            loader.write_sysctl("net.ipv4.tcp_syncookies", "1")
            state.restore_syncookies = "0"
            state.save()
            log.info("set net.ipv4.tcp_syncookies=1 (needed by the hand-off; restored on detach)")
        if metrics_addr:
            from .metrics import serve

            try:
                server = serve(metrics_addr, maps, state)
            except OSError as e:
                raise loader.AttachError("cannot serve metrics on %s: %s" % (metrics_addr, e.strerror)) from e
        from .syncache import Syncache

        keys = rotator(maps.secrets)
        try:
            cache = Syncache(maps, dp.drop_fd, args.iface)
        except PermissionError:
            raise loader.AttachError("retransmitting SYN-ACKs (AF_PACKET) needs CAP_NET_RAW") from None
        print(
            "synguard: protecting %s ports %s (%s XDP, key rotation every %gs, %s)"
            % (
                args.iface,
                ",".join(map(str, ports)),
                state.mode,
                rotate_seconds,
                "metrics on http://%s/metrics" % metrics_addr if metrics_addr else "no metrics",
            ),
            flush=True,
        )
        status = run_loop(stop, state, keys, cache, maps)
    finally:
        if server:
            server.shutdown()
        if cache:
            cache.close()
        maps.close()
        dp.close()
        loader.detach(args.iface, state)
    print("synguard: detached from %s" % args.iface, flush=True)
    return status


def run_loop(stop, state, keys, cache, maps):
    """Until SIGINT/SIGTERM: the syncache timer every tick (a quarter of the
    first retransmission delay, at most 250 ms), key rotation on time, and a
    check that our XDP program is still the one attached."""
    while True:
        tick = min(0.25, maps.config.lookup(0).rexmt_ms / 4000)
        if stop.wait(max(0.0, min(tick, keys.due_in()))):
            return 0
        cache.tick()
        if keys.due_in() <= 0:
            keys.rotate()
            prog_id, _ = libbpf.xdp_query(state.ifindex)
            if prog_id != state.xdp_prog_id:
                log.error("the XDP program on %s was replaced or removed by someone else", state.ifname)
                return 1


def open_maps(iface):
    """The pinned maps of a protected interface; UsageError if it is not."""
    if not loader.valid_ifname(iface):
        raise UsageError("invalid interface name %r" % iface)
    pins = loader.pin_dir(iface)
    if not os.path.isdir(pins):
        return None
    return loader.Maps(pins)


def status_dict(iface):
    """Everything `status` shows, from the pins and the run-state file."""
    from .syncache import Syncache

    maps = open_maps(iface)
    if maps is None:
        return None
    state = loader.RunState.load(iface)
    with maps:
        secrets = maps.secrets.lookup(0)
        cfg = maps.config.lookup(0)
        idx = loader.ifindex(iface)
        prog_id = libbpf.xdp_query(idx)[0] if idx else 0
        return {
            "interface": iface,
            "protected": bool(prog_id) and libbpf.prog_name(prog_id) == loader.XDP_PROG,
            "mode": state.mode if state else "unknown",
            "ports": maps.ports(),
            "controller_pid": state.pid if state else None,
            "controller_running": bool(state and state.controller_alive()),
            "rotate_seconds": state.rotate_seconds if state else None,
            "key_age_seconds": round((time.monotonic_ns() - secrets.rotated_ns) / 1e9, 3),
            "key_rotations": secrets.rotations,
            "fleet": bool(secrets.fleet),
            "metrics_addr": state.metrics_addr if state else "",
            "settings": current(cfg),
            "syncache": Syncache(maps, None).status(),
            "config": {
                "mss4": cfg.mss4,
                "mss6": cfg.mss6,
                "window": cfg.window,
                "wscale": cfg.wscale,
                "ttl": cfg.ttl,
                "wscale_ok": bool(cfg.flags & layout.CF_WSCALE),
                "sack_ok": bool(cfg.flags & layout.CF_SACK),
                "timestamps_ok": bool(cfg.flags & layout.CF_TIMESTAMPS),
            },
            "counters": maps.read_counters(),
            "counters_by_family": maps.read_counters_by_family()[1],
        }


def cmd_status(args):
    st = status_dict(args.iface)
    if st is None:
        print("synguard: %s is not protected" % args.iface, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(
        "%s: %s, %s XDP, ports %s"
        % (
            st["interface"],
            "protected" if st["protected"] else "NOT attached (pins only)",
            st["mode"],
            ",".join(map(str, st["ports"])),
        )
    )
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
    width = max(map(len, st["counters"]))
    for name, value in st["counters"].items():
        print("  %-*s %d" % (width, name, value))
    return 0


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
        opts += "".join(" " + o for o in ("sack", "timestamps", "unreach") if r[o])
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
    if not loader.valid_ifname(args.iface):
        raise UsageError("invalid interface name %r" % args.iface)
    if os.geteuid() != 0:
        raise UsageError("detaching needs root")
    state = loader.RunState.load(args.iface)
    if state and state.controller_alive() and state.pid != os.getpid():
        # Let the controller take its own things down and restore sysctls.
        os.kill(state.pid, signal.SIGTERM)
        for _ in range(100):
            if not state.controller_alive():
                break
            time.sleep(0.05)
    removed = loader.detach(args.iface)
    print(
        "synguard: %s: %s" % (args.iface, "removed " + ", ".join(removed) if removed else "nothing attached")
    )
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


COMMANDS = {
    "attach": cmd_attach,
    "status": cmd_status,
    "list": cmd_list,
    "set": cmd_set,
    "detach": cmd_detach,
    "keygen": cmd_keygen,
}


def main(argv=None):
    logging.basicConfig(format="synguard: %(message)s", level=logging.INFO)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, loader.AttachError) as e:
        print("synguard: error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("synguard: error: %s" % (e.strerror or e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
