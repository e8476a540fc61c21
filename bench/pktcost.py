"""Per-packet cost of synguard's XDP program, through BPF_PROG_TEST_RUN.

Method (see FACTS.md): one BPF_PROG_TEST_RUN per packet with repeat=1
(repeat > 1 would feed the program its own rewritten frame), the kernel's
own ns figure for the run, median per batch; minus the same measurement of a
one-line XDP_PASS program on the same frames (batches alternate, so drift of
the machine hits both), which removes the test harness's own cost. Runs in a
private network namespace with a real listener, so the socket lookups find
what they would on a server.

usage: python bench/pktcost.py [--batches 11] [--calls 10000] [--markdown FILE]
"""

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys

from synguard import layout, libbpf, loader, netns, packets
from synguard.packets import ACK, SYN
from synguard.secrets import KeyRotator

PORT = 8080
C4, S4, C6, S6 = "198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"
LINUX_OPTS = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0))
CONFIG = dict(mss4=1460, mss6=1440, window=65535, wscale=7, ttl=64,
              flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS)


def runs(prog_fd, frames):
    return [libbpf.TestRun(prog_fd, f) for f in frames]


def median_batch(runners):
    return statistics.median(r.run()[1] for r in runners)


class Bench:
    def __init__(self, dp, maps, null_fd, calls):
        self.dp, self.maps, self.null_fd, self.calls = dp, maps, null_fd, calls

    def configure(self, **syncache):
        self.maps.config.update(0, layout.Config(**{**CONFIG, **layout.SYNCACHE_DEFAULTS,
                                                    "cachelimit": 65536, "bucketlimit": 65536, **syncache}))
        self.clear()

    def clear(self):
        for name in (b"handoffs", b"syncache", b"syncache_state", b"syncache_buckets"):
            self.dp.xdp[name].clear()

    def syns(self, n, v6=False, base=0):
        client, server = (C6, S6) if v6 else (C4, S4)
        return [packets.tcp_frame(client, server, 1024 + (base + i) % 60000, PORT, seq=(base + i) * 7919,
                                  flags=SYN, options=LINUX_OPTS) for i in range(n)]

    def acks_for(self, syns):
        out = []
        for syn in syns:
            verdict, synack, _ = libbpf.test_run(self.dp.xdp_fd, syn)
            assert verdict == libbpf.XDP_TX
            sa = packets.parse_frame(synack)
            out.append(packets.tcp_frame(sa.dst, sa.src, sa.dport, sa.sport, seq=sa.ack, ack=sa.seq + 1, flags=ACK,
                                         options=packets.tcp_options(ts=(778, sa.options["ts"][0]))))
        return out

    def measure(self, frames, verdict, batches, before_batch=None):
        """(median raw ns, median baseline ns, median per-batch difference)."""
        prog, base = runs(self.dp.xdp_fd, frames), runs(self.null_fd, frames)
        rows = []
        for i in range(batches + 1):  # round 0 warms up, untimed
            if before_batch:
                before_batch()
            check = prog[0].run()[0]
            assert check == verdict, (check, verdict)
            p, b = median_batch(prog[1:]), median_batch(base[1:])
            if i:
                rows.append((p, b))
        return (statistics.median(p for p, _ in rows), statistics.median(b for _, b in rows),
                statistics.median(p - b for p, b in rows))


def cases(b):
    n = b.calls
    syn4, syn6 = b.syns(1)[0], b.syns(1, v6=True)[0]
    distinct_syns = b.syns(n + 1, base=10000)
    b.configure(syncookies_only=1)
    cookie_acks = b.acks_for(b.syns(n + 1, base=20000))
    b.configure()
    expand_syns = b.syns(n + 1, base=30000)
    expand_acks = b.acks_for(expand_syns)
    bogus = packets.tcp_frame(C4, S4, 40001, PORT, seq=5, ack=99, flags=ACK, options=packets.tcp_options(ts=(1, 2)))
    udp = bytearray(syn4)
    udp[23] = 17
    other_port = packets.tcp_frame(C4, S4, 40000, 9999, seq=1, flags=SYN, options=LINUX_OPTS)

    def insert_entries():
        b.clear()
        for s in expand_syns:
            libbpf.test_run(b.dp.xdp_fd, s)

    return [
        ("IPv4 SYN, cookies only (syncookies_only=1)", dict(syncookies_only=1), [syn4] * (n + 1), libbpf.XDP_TX, None),
        ("IPv6 SYN, cookies only (syncookies_only=1)", dict(syncookies_only=1), [syn6] * (n + 1), libbpf.XDP_TX, None),
        ("IPv4 SYN, new syncache entry (default)", {}, distinct_syns, libbpf.XDP_TX, b.clear),
        ("IPv4 SYN, duplicate of an entry (dupsyn)", {}, [syn4] * (n + 1), libbpf.XDP_TX, None),
        ("IPv4 ACK, valid cookie, no entry -> hand-off", dict(syncookies_only=1), cookie_acks, libbpf.XDP_PASS,
         b.clear),
        ("IPv4 ACK, matching an entry -> hand-off (expand)", {}, expand_acks, libbpf.XDP_PASS, insert_entries),
        ("IPv4 ACK, bogus cookie (XDP_DROP)", {}, [bogus] * (n + 1), libbpf.XDP_DROP, None),
        ("IPv4 ACK of an established connection (XDP_PASS)", {}, None, libbpf.XDP_PASS, None),
        ("IPv4 SYN to an unprotected port (XDP_PASS)", {}, [other_port] * (n + 1), libbpf.XDP_PASS, None),
        ("non-TCP frame (UDP) (XDP_PASS)", {}, [bytes(udp)] * (n + 1), libbpf.XDP_PASS, None),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=11)
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--markdown", help="write the results table to this file")
    args = ap.parse_args(argv)

    ns = "sg-bench-" + secrets.token_hex(3)
    pins = os.path.join(layout.PIN_ROOT, ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rows = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        loader.ensure_bpffs()
        dp = loader.Datapath(pins)
        from bcc import BPF

        null = BPF(text=b"int null(struct xdp_md *ctx) { return XDP_PASS; }")
        null_fd = null.load_func(b"null", BPF.XDP).fd
        with dp.open_maps() as maps, netns.netns(ns):
            maps.set_ports([PORT])
            KeyRotator(maps.secrets).install_initial()
            listener = socket.socket(socket.AF_INET6)
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", PORT))
            listener.listen(16)
            est = socket.create_connection(("127.0.0.1", PORT))
            estab = packets.tcp_frame("127.0.0.1", "127.0.0.1", est.getsockname()[1], PORT, seq=5, ack=99, flags=ACK,
                                      options=packets.tcp_options(ts=(1, 2)), payload=b"x" * 100)
            b = Bench(dp, maps, null_fd, args.calls)
            b.configure()
            for name, config, frames, verdict, before in cases(b):
                b.configure(**config)
                t_prog, t_base, net = b.measure(frames or [estab] * (args.calls + 1), verdict, args.batches, before)
                rows.append((name, t_prog, t_base, net))
                print("%-50s %6.0f ns  (raw %5.0f, XDP_PASS %3.0f)" % (name, net, t_prog, t_base), flush=True)
            est.close()
            listener.close()
        null.cleanup()
        dp.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(pins, ignore_errors=True)

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| frame | ns per packet | raw | XDP_PASS baseline |\n|---|---:|---:|---:|\n")
            for name, t_prog, t_base, net in rows:
                f.write("| %s | **%.0f** | %.0f | %.0f |\n" % (name, net, t_prog, t_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
