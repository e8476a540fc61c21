"""Per-packet cost of synguard's XDP program, through BPF_PROG_TEST_RUN.

Method (see FACTS.md): one BPF_PROG_TEST_RUN per packet with repeat=1
(repeat > 1 would feed the program its own rewritten frame), the kernel's
own ns figure for the run, median per batch, median of the batch medians;
minus the same measurement of a one-line XDP_PASS program on the same frame
(batches alternate), which removes the test harness's own cost. Runs in a private network
namespace with a real listener, so the socket lookups find what they would
on a server.

usage: python bench/pktcost.py [--batches 31] [--calls 20000] [--markdown FILE]
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


def net_ns(prog, base, calls, batches, before_batch=None):
    """(median ns of prog, median ns of base, median of the per-batch
    differences). Batches of prog and base alternate, so drift of the
    machine (other tenants, CPU frequency) hits both; one untimed round
    first."""
    rows = []
    for i in range(batches + 1):
        if before_batch:
            before_batch()
        p = statistics.median(r.run()[1] for r in prog(calls))
        b = statistics.median(r.run()[1] for r in base(calls))
        if i:
            rows.append((p, b))
    return (
        statistics.median(p for p, _ in rows),
        statistics.median(b for _, b in rows),
        statistics.median(p - b for p, b in rows),
    )


def same_frame(prog_fd, frame):
    t = libbpf.TestRun(prog_fd, frame)
    return lambda calls: (t for _ in range(calls))


def distinct_frames(prog_fd, frames):
    runs = [libbpf.TestRun(prog_fd, f) for f in frames]
    return lambda calls: runs[:calls]


def handshake_acks(dp, n, v6=False):
    """n third ACKs for n distinct handshakes, each SYN run through XDP."""
    acks = []
    client, server = (C6, S6) if v6 else (C4, S4)
    for i in range(n):
        syn = packets.tcp_frame(
            client,
            server,
            1024 + i % 60000,
            PORT,
            seq=i * 7919,
            flags=SYN,
            options=LINUX_OPTS,
            src_mac=packets.CLIENT_MAC,
        )
        verdict, synack, _ = libbpf.test_run(dp.xdp_fd, syn)
        assert verdict == libbpf.XDP_TX
        sa = packets.parse_frame(synack)
        acks.append(
            packets.tcp_frame(
                client,
                server,
                sa.dport,
                PORT,
                seq=sa.ack,
                ack=sa.seq + 1,
                flags=ACK,
                options=packets.tcp_options(ts=(778, sa.options["ts"][0])),
            )
        )
    return acks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=31)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--markdown", help="write the results table to this file")
    args = ap.parse_args(argv)

    ns = "sg-bench-" + secrets.token_hex(3)
    pins = os.path.join(layout.PIN_ROOT, ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        loader.ensure_bpffs()
        dp = loader.Datapath(pins)
        from bcc import BPF

        null = BPF(text=b"int null(struct xdp_md *ctx) { return XDP_PASS; }")
        null_fd = null.load_func(b"null", BPF.XDP).fd
        with dp.open_maps() as maps, netns.netns(ns):
            maps.config.update(
                0,
                layout.Config(
                    mss4=1460,
                    mss6=1440,
                    window=65535,
                    wscale=7,
                    ttl=64,
                    flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS,
                ),
            )
            maps.set_ports([PORT])
            KeyRotator(maps.secrets).install_initial()
            listener = socket.socket(socket.AF_INET6)
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", PORT))
            listener.listen(16)
            est = socket.create_connection(("127.0.0.1", PORT))
            est_port = est.getsockname()[1]

            syn4 = packets.tcp_frame(C4, S4, 40000, PORT, seq=1, flags=SYN, options=LINUX_OPTS)
            syn6 = packets.tcp_frame(C6, S6, 40000, PORT, seq=1, flags=SYN, options=LINUX_OPTS)
            calls = min(args.calls, 60000)
            acks = handshake_acks(dp, calls)
            bogus = packets.tcp_frame(
                C4, S4, 40001, PORT, seq=5, ack=99, flags=ACK, options=packets.tcp_options(ts=(1, 2))
            )
            estab = packets.tcp_frame(
                "127.0.0.1",
                "127.0.0.1",
                est_port,
                PORT,
                seq=5,
                ack=99,
                flags=ACK,
                options=packets.tcp_options(ts=(1, 2)),
                payload=b"x" * 100,
            )
            udp = bytearray(syn4)
            udp[23] = 17
            other_port = packets.tcp_frame(C4, S4, 40000, 9999, seq=1, flags=SYN, options=LINUX_OPTS)
            handoffs = dp.xdp[b"handoffs"]
            cases = [
                ("IPv4 SYN -> cookie SYN-ACK (XDP_TX)", syn4, libbpf.XDP_TX, None),
                ("IPv6 SYN -> cookie SYN-ACK (XDP_TX)", syn6, libbpf.XDP_TX, None),
                (
                    "IPv4 ACK, valid cookie -> hand-off (XDP_PASS + metadata)",
                    acks,
                    libbpf.XDP_PASS,
                    handoffs.clear,
                ),
                ("IPv4 ACK, bogus cookie (XDP_DROP)", bogus, libbpf.XDP_DROP, None),
                ("IPv4 ACK of an established connection (XDP_PASS)", estab, libbpf.XDP_PASS, None),
                ("IPv4 SYN to an unprotected port (XDP_PASS)", other_port, libbpf.XDP_PASS, None),
                ("non-TCP frame (UDP) (XDP_PASS)", bytes(udp), libbpf.XDP_PASS, None),
            ]
            rows = []
            for name, frame, verdict, reset in cases:
                if isinstance(frame, list):
                    prog, base = distinct_frames(dp.xdp_fd, frame), distinct_frames(null_fd, frame)
                    check = libbpf.test_run(dp.xdp_fd, frame[0])[0]
                else:
                    prog, base = same_frame(dp.xdp_fd, frame), same_frame(null_fd, frame)
                    check = libbpf.test_run(dp.xdp_fd, frame)[0]
                assert check == verdict or reset, (name, check)
                t_prog, t_base, net = net_ns(prog, base, calls, args.batches, reset)
                rows.append((name, t_prog, t_base, net))
                print("%-62s %6.0f ns  (raw %5.0f, XDP_PASS %3.0f)" % (name, net, t_prog, t_base), flush=True)
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
