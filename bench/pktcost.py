"""Per-packet cost of synguard's XDP and tc programs, through BPF_PROG_TEST_RUN.

Method (docs/BENCHMARKS.md): one BPF_PROG_TEST_RUN per packet with repeat=1
(repeat > 1 would feed the program its own rewritten frame), the kernel's
own ns figure for the run, median per batch; minus the same measurement of a
one-line pass-only program of the same hook on the same frames, which
removes the test harness's own cost. Batches go round-robin over all cases and their
baselines, so drift of the shared machine hits them all alike. Runs in a
private network namespace with a real listener, so the socket lookups find
what they would on a server.

--reference OBJ also times the kernel selftest xdp_synproxy (its object file,
built outside this repository: docs/BENCHMARKS.md) on the same frames, in
the same round-robin, as a column of its own. It is loaded with bpftool into
a private bpffs directory, its maps set as its userspace tool would
(port 8080; MSS 1460/1440, wscale 7, TTL 64), and conntrack is switched on in
the namespace (an nftables ct rule) for its conntrack lookup to find the
established connection.

A third column times the data path built for the kernel's cookies (--cookies
kernel, bpf/kcookie.h) on the frames it answers without entries: the SYNs
(the kernel mints the cookie), an ACK the kernel's check accepts (made by
this program's own SYN-ACKs), the bogus and other ACKs. It shares the
namespace, which gets tcp_syncookies=2 and tcp_timestamps=2 as attach sets
them in that mode.

usage: python bench/pktcost.py [--batches 11] [--calls 10000] [--reference OBJ] [--markdown FILE]
                              [--only TEXT ...]
"""

import argparse
import contextlib
import os
import socket
import statistics
import sys
import time

from common import (
    C4,
    C6,
    LINUX_OPTS,
    PORT,
    S4,
    S6,
    ReferenceObjectError,
    clear,
    configure,
    datapath,
    reference,
    syns,
)
from synguard import host, libbpf, packets
from synguard.lab import netns, support
from synguard.packets import ACK, SYN

TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: not ours, the next filter decides
CONNTRACK_ON = """
table inet sgbench_ct {
  chain in {
    type filter hook input priority filter; policy accept;
    ct state established accept
  }
}
"""


def runs(prog_fd, frames):
    return [libbpf.TestRun(prog_fd, f) for f in frames]


def median_batch(runners):
    return statistics.median(r.run()[1] for r in runners)


COLUMNS = ("synguard", "kernel", "reference")  # kernel: synguard built for the kernel's cookies


class Bench:
    def __init__(self, dp, maps, nulls, calls, ref_fd=None, kernel=None):
        """nulls: {hook: fd of a program that only passes} ("xdp", "tc");
        kernel: (Datapath, Maps) built for the kernel's cookies."""
        self.dp, self.maps, self.nulls, self.calls = dp, maps, nulls, calls
        self.progs = {"xdp": dp.xdp_fd, "tc": dp.tc_fd}
        self.ref_fd = ref_fd
        self.kernel = kernel
        # XDP programs of the other columns
        self.columns = {"reference": ref_fd, "kernel": kernel[0].xdp_fd if kernel else None}

    def configure(self, **syncache):
        configure(self.dp, self.maps, **{"cachelimit": 65536, "bucketlimit": 65536, **syncache})

    def clear(self):
        clear(self.dp)

    def acks_for(self, frames, prog_fd=None):
        out = []
        for syn in frames:
            verdict, synack, _ = libbpf.test_run(prog_fd or self.dp.xdp_fd, syn)
            assert verdict == libbpf.XDP_TX
            out.append(packets.ack_for(synack))
        return out

    def measure_all(self, todo, batches):
        """Round-robin: each batch runs every case once (synguard's program,
        the pass-only baseline of the same hook on the same frames, then
        each other column and its baseline where the case has one), so drift
        of the machine is spread over all cases instead of landing on one.
        Returns per case {column: ...}, each (median raw ns, median baseline
        ns, median per-batch difference, lowest and highest per-batch
        difference)."""
        prepared = []
        for _name, hook, config, frames, verdict, before, others in todo:
            todo_runs = [
                [
                    "synguard",
                    runs(self.progs[hook], frames),
                    runs(self.nulls[hook], frames),
                    verdict,
                    None,
                    None,
                ]
            ]
            for who, (col_frames, col_verdict, col_before) in others.items():
                fd = self.columns[who]
                if fd is None:
                    continue
                # A callable makes fresh frames for each batch (the kernel's
                # cookies age out after two minutes).
                fresh = col_frames if callable(col_frames) else None
                col_frames = fresh() if fresh else col_frames
                todo_runs.append(
                    [
                        who,
                        runs(fd, col_frames),
                        runs(self.nulls[hook], col_frames),
                        col_verdict,
                        fresh,
                        col_before,
                    ]
                )
            prepared.append((hook, config, before, todo_runs))
        rows = [{} for _ in todo]
        for i in range(batches + 1):  # round 0 warms up, untimed
            for row, (hook, config, before, todo_runs) in zip(rows, prepared):
                self.configure(**config)
                if before:
                    before()
                for run in todo_runs:
                    who, prog, base, verdict, fresh, col_before = run
                    if col_before:
                        col_before()
                    if fresh and i:
                        frames = fresh()
                        prog, base = run[1], run[2] = (
                            runs(self.columns[who], frames),
                            runs(self.nulls[hook], frames),
                        )
                    check = prog[0].run()[0]
                    assert check == verdict, (who, check, verdict)
                    p, b = median_batch(prog[1:]), median_batch(base[1:])
                    if i:
                        row.setdefault(who, []).append((p, b))
        out = []
        for r in rows:
            out.append(
                {
                    who: (
                        statistics.median(p for p, _ in v),
                        statistics.median(b for _, b in v),
                        statistics.median(p - b for p, b in v),
                        min(p - b for p, b in v),
                        max(p - b for p, b in v),
                    )
                    for who, v in r.items()
                }
            )
        return out


def cases(b, estab):
    """(name, hook, synguard's settings, frames, verdict, set-up before each
    batch, {other column: (its frames, its verdict, its set-up or None)})."""
    n = b.calls
    XDP_TX, XDP_PASS, XDP_DROP = libbpf.XDP_TX, libbpf.XDP_PASS, libbpf.XDP_DROP
    syn4, syn6 = syns(1)[0], syns(1, v6=True)[0]
    bare4 = packets.tcp_frame(C4, S4, 40002, PORT, seq=7, flags=SYN)
    # The extension-header flood's SYNs: an 8-byte options header of one
    # PadN each, the cheapest way around an XDP that leaves them alone; then
    # one unknown option to skip (type 0x1e): the option walk's cost. The
    # kernel-cookie build beside; xdp_synproxy leaves them to the kernel.
    pad = b"\x01\x04" + bytes(4)
    ext_cases = [
        (
            "IPv6 SYN behind %s, cookies only" % what,
            "xdp",
            dict(syncookies_only=1),
            [frame] * (n + 1),
            XDP_TX,
            None,
            {"kernel": ([frame] * (n + 1), XDP_TX, None)},
        )
        for what, ext in (
            ("destination options (Linux layout)", [(60, pad)]),
            ("hop-by-hop + destination options", [(0, pad), (60, pad)]),
            ("destination options with an option to skip", [(60, b"\x1e\x04abcd")]),
        )
        for frame in [packets.tcp_frame(C6, S6, 40003, PORT, seq=7, flags=SYN, options=LINUX_OPTS, ext=ext)]
    ]
    distinct_syns = syns(n + 1, base=10000)
    b.configure(syncookies_only=1)
    cookie_syns = syns(n + 1, base=20000)
    cookie_acks = b.acks_for(cookie_syns)
    ref_acks = (lambda: b.acks_for(cookie_syns, b.ref_fd)) if b.ref_fd is not None else None
    kernel_acks = (lambda: b.acks_for(cookie_syns, b.columns["kernel"])) if b.kernel else None
    b.configure()
    expand_syns = syns(n + 1, base=30000)
    expand_acks = b.acks_for(expand_syns)
    bogus = packets.tcp_frame(
        C4, S4, 40001, PORT, seq=5, ack=99, flags=ACK, options=packets.tcp_options(ts=(1, 2))
    )
    udp = bytearray(syn4)
    udp[23] = 17
    udp = bytes(udp)
    other_port = packets.tcp_frame(C4, S4, 40000, 9999, seq=1, flags=SYN, options=LINUX_OPTS)

    def insert_entries():
        b.clear()
        for s in expand_syns:
            libbpf.test_run(b.dp.xdp_fd, s)

    def pause():
        """The syncache paused, as after an overflow under a flood."""
        st = b.maps.syncache_state.lookup(0)
        st.pause_until_ns = time.monotonic_ns() + (600 << 30)
        b.maps.syncache_state.update(0, st)

    def leave_handoffs():
        """The hand-offs XDP leaves for tc, one for each of these ACKs."""
        b.clear()
        for ack in cookie_acks:
            assert libbpf.test_run(b.dp.xdp_fd, ack)[0] == XDP_PASS

    def spend_rst_budget():
        """The RST budgets spent, as under an ACK flood: this CPU's share of
        rstlimit goes first (a second's worth), then every bogus ACK is
        dropped. Run on one CPU (main pins the process)."""
        while libbpf.test_run(b.dp.xdp_fd, bogus)[0] == XDP_TX:
            pass

    def same(frames, verdict, kernel=True):
        """The same frames and verdict for the reference and, unless told
        otherwise, the kernel-cookie build."""
        return {
            "reference": (frames, verdict, None),
            **({"kernel": (frames, verdict, None)} if kernel else {}),
        }

    def clear_kernel():
        clear(b.kernel[0])  # no recent hand-offs: each ACK is a first one

    cookies = dict(syncookies_only=1)
    return [
        (
            "IPv4 SYN, options MSS+SACK+TS+WS (Linux layout), cookies only",
            "xdp",
            cookies,
            [syn4] * (n + 1),
            XDP_TX,
            None,
            same([syn4] * (n + 1), XDP_TX),
        ),
        (
            "IPv6 SYN, options MSS+SACK+TS+WS (Linux layout), cookies only",
            "xdp",
            cookies,
            [syn6] * (n + 1),
            XDP_TX,
            None,
            same([syn6] * (n + 1), XDP_TX),
        ),
        *ext_cases,
        (
            "IPv4 SYN without options, cookies only",
            "xdp",
            cookies,
            [bare4] * (n + 1),
            XDP_TX,
            None,
            same([bare4] * (n + 1), XDP_TX),
        ),
        (
            "IPv4 SYN (Linux options), new syncache entry (default)",
            "xdp",
            {},
            distinct_syns,
            XDP_TX,
            b.clear,
            {},
        ),
        ("IPv4 SYN (Linux options), duplicate of an entry", "xdp", {}, [syn4] * (n + 1), XDP_TX, None, {}),
        (
            "IPv4 SYN (Linux options), default, syncache paused (a flood's)",
            "xdp",
            {},
            [syn4] * (n + 1),  # a paused SYN makes no entry: the same frame will do
            XDP_TX,
            pause,
            {},
        ),
        (
            "IPv4 ACK (TS), valid cookie, no entry -> hand-off / pass",
            "xdp",
            cookies,
            cookie_acks,
            XDP_PASS,
            b.clear,
            {
                **({"reference": (ref_acks, XDP_PASS, None)} if ref_acks else {}),
                **({"kernel": (kernel_acks, XDP_PASS, clear_kernel)} if kernel_acks else {}),
            },
        ),
        (
            "IPv4 ACK (TS), matching an entry -> hand-off (expand)",
            "xdp",
            {},
            expand_acks,
            XDP_PASS,
            insert_entries,
            {},
        ),
        (
            "IPv4 ACK (TS) with a bogus cookie, beyond the RST budget (XDP_DROP, a flood's)",
            "xdp",
            {},
            [bogus] * (n + 1),
            XDP_DROP,
            spend_rst_budget,
            same([bogus] * (n + 1), XDP_DROP, kernel=False),
        ),
        (
            "IPv4 ACK (TS) with a bogus cookie, answered with an RST (XDP_TX)",
            "xdp",
            {"rst_rate": 10_000_000, "synack_rate": 0},  # no budget runs out
            [bogus] * (n + 1),
            XDP_TX,
            None,
            {},
        ),
        (
            "IPv4 ACK (TS, 100 bytes) of an established connection (XDP_PASS)",
            "xdp",
            {},
            [estab] * (n + 1),
            XDP_PASS,
            None,
            same([estab] * (n + 1), XDP_PASS),
        ),
        (
            "IPv4 SYN to an unprotected port (synguard XDP_PASS, xdp_synproxy XDP_DROP)",
            "xdp",
            {},
            [other_port] * (n + 1),
            XDP_PASS,
            None,
            {**same([other_port] * (n + 1), XDP_DROP), "kernel": ([other_port] * (n + 1), XDP_PASS, None)},
        ),
        (
            "non-TCP frame (UDP) (XDP_PASS)",
            "xdp",
            {},
            [udp] * (n + 1),
            XDP_PASS,
            None,
            same([udp] * (n + 1), XDP_PASS),
        ),
        # tc sees every frame XDP passed. Under BPF_PROG_TEST_RUN the kfunc
        # refuses (no real tc ingress), so the hand-off ends as aborted: the
        # figure is the lookup and take of the hand-off plus the listener
        # lookup, without the request socket itself.
        (
            "tc: data segment of an established connection",
            "tc",
            {},
            [estab] * (n + 1),
            TC_ACT_UNSPEC,
            None,
            {},
        ),
        ("tc: segment to an unprotected port", "tc", {}, [other_port] * (n + 1), TC_ACT_UNSPEC, None, {}),
        (
            "tc: an ACK XDP handed off (entry found and taken)",
            "tc",
            cookies,
            cookie_acks,
            TC_ACT_UNSPEC,
            leave_handoffs,
            {},
        ),
    ]


def fmt(r):
    return "%.0f (%.0f-%.0f)" % (r[2], r[3], r[4]) if r else "-"


def main(argv=None):
    try:
        return run(argv)
    except ReferenceObjectError as e:  # bad input: --reference
        print("pktcost.py: error: %s" % e, file=sys.stderr)
        return 2


def run(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=11)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--reference", metavar="OBJ", help="xdp_synproxy_kern.bpf.o to time beside synguard")
    ap.add_argument("--markdown", help="write the results table to this file")
    ap.add_argument(
        "--only", action="append", default=[], metavar="TEXT", help="only the cases whose name has TEXT"
    )
    args = ap.parse_args(argv)
    # One CPU for the whole run: steadier timings, and the per-CPU RST
    # budget the bogus-ACK case spends is the one every call then meets.
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    rows = []
    with datapath() as (dp, maps, ns), contextlib.ExitStack() as stack:
        from bcc import BPF

        ref_fd = None
        if args.reference:
            support.load_conntrack()
            # Conntrack tracks a namespace's flows only once a rule uses it.
            netns.run(ns, ["nft", "-f", "-"], input=CONNTRACK_ON, text=True, check=True)
            ref_fd = stack.enter_context(reference(args.reference))
        null = BPF(
            text=b"int null(struct xdp_md *ctx) { return XDP_PASS; }\n"
            b"int tcnull(struct __sk_buff *skb) { return -1; }"
        )
        nulls = {
            "xdp": null.load_func(b"null", BPF.XDP).fd,
            "tc": null.load_func(b"tcnull", BPF.SCHED_CLS).fd,
        }
        est = socket.create_connection(("127.0.0.1", PORT))
        estab = packets.tcp_frame(
            "127.0.0.1",
            "127.0.0.1",
            est.getsockname()[1],
            PORT,
            seq=5,
            ack=99,
            flags=ACK,
            options=packets.tcp_options(ts=(1, 2)),
            payload=b"x" * 100,
        )
        # The kernel-cookie build: its SYNs need tcp_syncookies=2 (a cookie
        # for every SYN) and its TSvals tcp_timestamps=2, as attach sets them.
        for name in ("net.ipv4.tcp_syncookies", "net.ipv4.tcp_timestamps"):
            host.write_sysctl(name, "2")
        kernel = stack.enter_context(support.compiled("bench-kc", cookies="kernel"))
        configure(*kernel, syncookies_only=1)
        b = Bench(dp, maps, nulls, args.calls, ref_fd, kernel)
        b.configure()
        todo = [case for case in cases(b, estab) if not args.only or any(t in case[0] for t in args.only)]
        if not todo:
            ap.error("--only %s: no case's name has it" % " / ".join(args.only))
        for (name, *_), res in zip(todo, b.measure_all(todo, args.batches)):
            sg, kc, ref = (res.get(c) for c in COLUMNS)
            rows.append((name, sg, kc, ref))
            print(
                "%-66s %16s ns  (raw %5.0f, pass-only %3.0f)   kernel cookies %s   xdp_synproxy %s"
                % (name, fmt(sg), sg[0], sg[1], fmt(kc), fmt(ref)),
                flush=True,
            )
        est.close()
        null.cleanup()

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(
                "ns per packet above the pass-only program: median of %d batches of %d calls "
                "(lowest-highest batch)\n\n" % (args.batches, args.calls)
            )
            f.write(
                "| frame | synguard | synguard, kernel cookies | xdp_synproxy | synguard raw | "
                "pass-only baseline |\n"
            )
            f.write("|---|---:|---:|---:|---:|---:|\n")
            for name, sg, kc, ref in rows:
                f.write(
                    "| %s | **%s** | %s | %s | %.0f | %.0f |\n"
                    % (name, fmt(sg), fmt(kc), fmt(ref), sg[0], sg[1])
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
