"""The read-only commands: status, list, top. They open the pinned maps
of a protected interface and show them; they change nothing."""

import json
import shutil
import sys
import time

from ..formats import format_ports, num
from ..options import UsageError
from ..settings import show
from .common import FAILED, JSON_HELP, Command, NotProtected, iface_argument, known_iface, open_maps


def cmd_status(args):
    from ..listeners import mptcp_ports
    from ..status import protection, snapshot

    protected, reason, state = protection(known_iface(args.iface))
    try:
        maps = open_maps(args.iface) if state else None
    except NotProtected:
        maps = None
    if maps is None:  # an answer, not an error: the exit code says it
        print("synguard: %s is not protected: %s" % (args.iface, reason), file=sys.stderr)
        return FAILED
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
    from ..syncache import describe

    with open_maps(args.iface) as maps:
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
    from ..syncache import status

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
    from ..terminal import Screen

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
    for (_head, names, what), rate in zip(TOP_COLUMNS, rates or [None] * len(TOP_COLUMNS)):
        shown = "%12.0f/s" % rate if rate is not None else "%12s/s" % "-"
        lines.append("%s  %s (%s)" % (shown, what, _formula(names)))
    lines.append("%12d    syncache entries (limit %d)" % (entries, limit))
    lines.append("%12s    syncache paused (cookies only)" % ("yes" if paused else "no"))
    return [line[:cols] for line in lines]


def json_arguments(parser):
    iface_argument(parser)
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def top_arguments(t):
    iface_argument(t)
    t.add_argument(
        "interval", nargs="?", default="1", metavar="INTERVAL", help="seconds between lines (default 1)"
    )
    t.add_argument(
        "count",
        nargs="?",
        metavar="COUNT",
        help="lines to print, then exit (default: until Ctrl-C; a refreshing screen on a terminal)",
    )


COMMANDS = [
    Command(
        "status",
        "whether IFACE is protected (the exit code), counters, syncache, key age, mode",
        "IFACE [--json]",
        """  sudo synguard status eth0
  sudo synguard status eth0 --json | jq .counters.badcookie
  sudo synguard status eth0 >/dev/null || echo not protected""",
        json_arguments,
        cmd_status,
    ),
    Command(
        "list",
        "the half-open connections in IFACE's syncache (SYN_RECEIVED), oldest first",
        "IFACE [--json]",
        """  sudo synguard list eth0
  sudo synguard list eth0 | head -20
  sudo synguard list eth0 --json | jq -r '.[].remote'""",
        json_arguments,
        cmd_list,
    ),
    Command(
        "top",
        "per-second rates of what matters under attack, read from IFACE's maps",
        "IFACE [INTERVAL [COUNT]]",
        """  sudo synguard top eth0                         # a refreshing screen; q or Ctrl-C ends it
  sudo synguard top eth0 1 10                    # 10 lines, one a second, as vmstat
  sudo synguard top eth0 5 | ts                  # not a terminal: lines until stopped""",
        top_arguments,
        cmd_top,
    ),
]
