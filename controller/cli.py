"""synguard: SYN cookies at XDP for Linux TCP listeners.

usage:
  synguard attach IFACE --ports 80,443 [--mode auto|native|generic]
                  [--rotate-seconds 16] [--metrics-addr 127.0.0.1:9717 | --no-metrics]
                  [--force]
  synguard status IFACE [--json]
  synguard detach IFACE

examples:
  sudo synguard attach eth0 --ports 80,443       # protect until SIGINT/SIGTERM
  sudo synguard status eth0 --json               # from another shell
  sudo synguard detach eth0                      # also after a crash of attach
  curl -s 127.0.0.1:9717/metrics

exit codes: 0 ok, 1 runtime failure (status: not protected), 2 bad input.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from . import __version__, layout, libbpf, loader

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
    p = Parser(
        prog="synguard",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--version", action="version", version="synguard " + __version__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    a = sub.add_parser("attach", help="protect listeners on an interface (foreground)")
    a.add_argument("iface")
    a.add_argument("--ports", required=True, type=str, help="ports to protect: 80,443,8000-8010")
    a.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        default="auto",
        help="XDP mode: native (driver), generic (skb), auto: native, else generic",
    )
    a.add_argument(
        "--rotate-seconds",
        type=float,
        default=16.0,
        help="cookie key rotation period (default 16, the seed's SYNCOOKIE_LIFETIME)",
    )
    m = a.add_mutually_exclusive_group()
    m.add_argument("--metrics-addr", default="127.0.0.1:9717", help="Prometheus /metrics on HOST:PORT")
    m.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    a.add_argument("--force", action="store_true", help="replace another XDP program on IFACE")

    s = sub.add_parser("status", help="counters, key age, mode")
    s.add_argument("iface")
    s.add_argument("--json", action="store_true")

    d = sub.add_parser("detach", help="remove everything synguard attached to IFACE")
    d.add_argument("iface")
    return p


def cmd_attach(args):
    ports = parse_ports(args.ports)
    if not 1 <= args.rotate_seconds <= 3600:
        raise UsageError("--rotate-seconds must be within 1..3600")
    metrics_addr = "" if args.no_metrics else args.metrics_addr
    if metrics_addr:
        from .metrics import parse_addr

        try:
            parse_addr(metrics_addr)
        except ValueError as e:
            raise UsageError("--metrics-addr: %s" % e) from None

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    syncookies = loader.read_sysctl("net.ipv4.tcp_syncookies", ["1"])[0]
    dp, maps, state = loader.attach(
        args.iface, ports, args.mode, args.force, args.rotate_seconds, metrics_addr
    )
    server = None
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
        from .secrets import KeyRotator

        rotator = KeyRotator(maps.secrets)
        print(
            "synguard: protecting %s ports %s (%s XDP, key rotation every %gs, %s)"
            % (
                args.iface,
                ",".join(map(str, ports)),
                state.mode,
                args.rotate_seconds,
                "metrics on http://%s/metrics" % metrics_addr if metrics_addr else "no metrics",
            ),
            flush=True,
        )
        status = 0
        next_rotation = time.monotonic() + args.rotate_seconds
        while not stop.wait(max(0.0, next_rotation - time.monotonic())):
            rotator.rotate()
            next_rotation += args.rotate_seconds
            prog_id, _ = libbpf.xdp_query(state.ifindex)
            if prog_id != state.xdp_prog_id:
                log.error("the XDP program on %s was replaced or removed by someone else", args.iface)
                status = 1
                break
    finally:
        if server:
            server.shutdown()
        maps.close()
        dp.close()
        loader.detach(args.iface, state)
    print("synguard: detached from %s" % args.iface, flush=True)
    return status


def status_dict(iface):
    """Everything `status` shows, from the pins and the run-state file."""
    pins = loader.pin_dir(iface)
    if not os.path.isdir(pins):
        return None
    state = loader.RunState.load(iface)
    maps = loader.Maps(pins)
    try:
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
            "metrics_addr": state.metrics_addr if state else "",
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
        }
    finally:
        maps.close()


def cmd_status(args):
    if not loader.valid_ifname(args.iface):
        raise UsageError("invalid interface name %r" % args.iface)
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
    width = max(map(len, st["counters"]))
    for name, value in st["counters"].items():
        print("  %-*s %d" % (width, name, value))
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


def main(argv=None):
    logging.basicConfig(format="synguard: %(message)s", level=logging.INFO)
    try:
        args = build_parser().parse_args(argv)
        return {"attach": cmd_attach, "status": cmd_status, "detach": cmd_detach}[args.command](args)
    except (UsageError, loader.AttachError) as e:
        print("synguard: error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("synguard: error: %s" % (e.strerror or e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
