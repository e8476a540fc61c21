"""Per-packet cost of synguard's XDP and tc programs, through BPF_PROG_TEST_RUN.

Method (docs/BENCHMARKS.md): one BPF_PROG_TEST_RUN per packet with repeat=1
(repeat > 1 would feed the program its own rewritten frame), the kernel's
own ns figure for the run, median per batch; minus the same measurement of a
one-line pass-only program of the same hook on the same frames, which
removes the test harness's own cost. Batches go round-robin over all cases and their
baselines, so drift of the shared machine hits them all alike. Runs in a
private network namespace with a real listener, so the socket lookups find
what they would on a server.

usage: python bench/pktcost.py [--batches 11] [--calls 10000] [--markdown FILE]
"""

import argparse
import socket
import statistics
import sys

from common import C4, LINUX_OPTS, PORT, S4, clear, configure, datapath, syns
from synguard import libbpf, packets
from synguard.packets import ACK, SYN

TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: not ours, the next filter decides


def runs(prog_fd, frames):
    return [libbpf.TestRun(prog_fd, f) for f in frames]


def median_batch(runners):
    return statistics.median(r.run()[1] for r in runners)


class Bench:
    def __init__(self, dp, maps, nulls, calls):
        """nulls: {hook: fd of a program that only passes} ("xdp", "tc")."""
        self.dp, self.maps, self.nulls, self.calls = dp, maps, nulls, calls
        self.progs = {"xdp": dp.xdp_fd, "tc": dp.tc_fd}

    def configure(self, **syncache):
        configure(self.dp, self.maps, **{"cachelimit": 65536, "bucketlimit": 65536, **syncache})

    def clear(self):
        clear(self.dp)

    def acks_for(self, frames):
        out = []
        for syn in frames:
            verdict, synack, _ = libbpf.test_run(self.dp.xdp_fd, syn)
            assert verdict == libbpf.XDP_TX
            out.append(packets.ack_for(synack))
        return out

    def measure_all(self, todo, batches):
        """Round-robin: each batch runs every case once (program, then the
        pass-only baseline of the same hook on the same frames), so drift of
        the machine is spread over all cases instead of landing on one.
        Returns per case (median raw ns, median baseline ns, median
        per-batch difference)."""
        prepared = [
            (config, runs(self.progs[hook], frames), runs(self.nulls[hook], frames), verdict, before)
            for _name, hook, config, frames, verdict, before in todo
        ]
        rows = [[] for _ in todo]
        for i in range(batches + 1):  # round 0 warms up, untimed
            for row, (config, prog, base, verdict, before) in zip(rows, prepared):
                self.configure(**config)
                if before:
                    before()
                check = prog[0].run()[0]
                assert check == verdict, (check, verdict)
                p, b = median_batch(prog[1:]), median_batch(base[1:])
                if i:
                    row.append((p, b))
        return [
            (
                statistics.median(p for p, _ in r),
                statistics.median(b for _, b in r),
                statistics.median(p - b for p, b in r),
            )
            for r in rows
        ]


def cases(b, estab):
    n = b.calls
    syn4, syn6 = syns(1)[0], syns(1, v6=True)[0]
    distinct_syns = syns(n + 1, base=10000)
    b.configure(syncookies_only=1)
    cookie_acks = b.acks_for(syns(n + 1, base=20000))
    b.configure()
    expand_syns = syns(n + 1, base=30000)
    expand_acks = b.acks_for(expand_syns)
    bogus = packets.tcp_frame(
        C4, S4, 40001, PORT, seq=5, ack=99, flags=ACK, options=packets.tcp_options(ts=(1, 2))
    )
    udp = bytearray(syn4)
    udp[23] = 17
    other_port = packets.tcp_frame(C4, S4, 40000, 9999, seq=1, flags=SYN, options=LINUX_OPTS)

    def insert_entries():
        b.clear()
        for s in expand_syns:
            libbpf.test_run(b.dp.xdp_fd, s)

    def leave_handoffs():
        """The hand-offs XDP leaves for tc, one for each of these ACKs."""
        b.clear()
        for ack in cookie_acks:
            assert libbpf.test_run(b.dp.xdp_fd, ack)[0] == libbpf.XDP_PASS

    return [
        (
            "IPv4 SYN, cookies only (syncookies_only=1)",
            "xdp",
            dict(syncookies_only=1),
            [syn4] * (n + 1),
            libbpf.XDP_TX,
            None,
        ),
        (
            "IPv6 SYN, cookies only (syncookies_only=1)",
            "xdp",
            dict(syncookies_only=1),
            [syn6] * (n + 1),
            libbpf.XDP_TX,
            None,
        ),
        ("IPv4 SYN, new syncache entry (default)", "xdp", {}, distinct_syns, libbpf.XDP_TX, b.clear),
        ("IPv4 SYN, duplicate of an entry (dupsyn)", "xdp", {}, [syn4] * (n + 1), libbpf.XDP_TX, None),
        (
            "IPv4 ACK, valid cookie, no entry -> hand-off",
            "xdp",
            dict(syncookies_only=1),
            cookie_acks,
            libbpf.XDP_PASS,
            b.clear,
        ),
        (
            "IPv4 ACK, matching an entry -> hand-off (expand)",
            "xdp",
            {},
            expand_acks,
            libbpf.XDP_PASS,
            insert_entries,
        ),
        ("IPv4 ACK, bogus cookie (XDP_DROP)", "xdp", {}, [bogus] * (n + 1), libbpf.XDP_DROP, None),
        (
            "IPv4 ACK of an established connection (XDP_PASS)",
            "xdp",
            {},
            [estab] * (n + 1),
            libbpf.XDP_PASS,
            None,
        ),
        (
            "IPv4 SYN to an unprotected port (XDP_PASS)",
            "xdp",
            {},
            [other_port] * (n + 1),
            libbpf.XDP_PASS,
            None,
        ),
        ("non-TCP frame (UDP) (XDP_PASS)", "xdp", {}, [bytes(udp)] * (n + 1), libbpf.XDP_PASS, None),
        # tc sees every frame XDP passed. Under BPF_PROG_TEST_RUN the kfunc
        # refuses (no real tc ingress), so the hand-off ends as aborted: the
        # figure is the lookup and take of the hand-off plus the listener
        # lookup, without the request socket itself.
        ("tc: data segment of an established connection", "tc", {}, [estab] * (n + 1), TC_ACT_UNSPEC, None),
        ("tc: segment to an unprotected port", "tc", {}, [other_port] * (n + 1), TC_ACT_UNSPEC, None),
        (
            "tc: an ACK XDP handed off (entry found and taken)",
            "tc",
            dict(syncookies_only=1),
            cookie_acks,
            TC_ACT_UNSPEC,
            leave_handoffs,
        ),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=11)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--markdown", help="write the results table to this file")
    args = ap.parse_args(argv)

    rows = []
    with datapath() as (dp, maps, _ns):
        from bcc import BPF

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
        b = Bench(dp, maps, nulls, args.calls)
        b.configure()
        todo = cases(b, estab)
        for (name, *_), (t_prog, t_base, net) in zip(todo, b.measure_all(todo, args.batches)):
            rows.append((name, t_prog, t_base, net))
            print("%-52s %6.0f ns  (raw %5.0f, pass-only %3.0f)" % (name, net, t_prog, t_base), flush=True)
        est.close()
        null.cleanup()

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| frame | ns per packet | raw | pass-only baseline |\n|---|---:|---:|---:|\n")
            for name, t_prog, t_base, net in rows:
                f.write("| %s | **%.0f** | %.0f | %.0f |\n" % (name, net, t_prog, t_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
