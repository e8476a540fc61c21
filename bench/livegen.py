"""A SYN flood from XDP live frames (BPF_PROG_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES, Linux >= 5.18), and a counter for what comes back.

The generator (livegen.c, compiled by bcc) runs in the attacker's namespace
with ingress_ifindex its veth and returns XDP_TX: each frame leaves that veth
as an xdp_frame and reaches the server veth's XDP program the way a NIC's
frame would (veth_xdp_xmit into the peer's ring, its NAPI poll), not as an
skb that veth must copy first, as AF_PACKET's (trafgen's) do. The kernel
runs the frames in batches of 64 and flushes each batch to the peer, whose
NAPI poll runs when the batch's softirqs are let run, on the same CPU: the
generator is paced by what the receiver does, so nothing is dropped in the
veth ring and the cost per frame is the CPU time of the run.

The sink (on the attacker's veth) counts SYN-ACKs, RSTs and the rest, and
drops them.
"""

import ctypes as ct
import ipaddress
import os
import struct
import time

from common import xdp_replace
from synguard import libbpf, netlink, packets
from synguard.lab import netns

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "livegen.c")
SPOOF4 = ipaddress.ip_network("198.19.0.0/16")
SPOOF6 = ipaddress.ip_network("2001:db8:5::/64")
LINUX_OPTS = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(1, 0))
CHUNK = 1 << 16  # frames per BPF_PROG_RUN call: a bounded time per call


def probe():
    """None if this kernel runs XDP in live-frames mode for us, else why not
    ("refused: EPERM"): one run of a one-line XDP_DROP program on a frame
    from loopback (nothing is sent)."""
    import errno

    from bcc import BPF

    b = BPF(text=b"int d(struct xdp_md *ctx) { return XDP_DROP; }")
    try:
        fd = b.load_func(b"d", BPF.XDP).fd
        frame = bytes(6) + bytes(6) + b"\x08\x00" + bytes(46)
        ctx = struct.pack("<6I", 0, len(frame), 0, 1, 0, 0)  # ingress_ifindex 1: lo
        r = libbpf.TestRun(fd, frame, repeat=1, ctx=ctx)
        r.opts.data_out, r.opts.flags = None, BPF_F_TEST_XDP_LIVE_FRAMES
        try:
            r.run()
        except OSError as e:
            return "refused: %s" % (errno.errorcode.get(e.errno, str(e.errno)))
        return None
    finally:
        b.cleanup()


def template(dst, dport, dst_mac, src_mac, v6=False, options=LINUX_OPTS):
    """A SYN frame with the generator's varying fields zero (the host part of
    the source, source port, seq) and its checksums made for that; MAC
    addresses as "02:00:..." strings."""
    src = SPOOF6[0] if v6 else SPOOF4[0]
    return packets.tcp_frame(
        src,
        dst,
        0,
        dport,
        seq=0,
        flags=packets.SYN,
        options=options,
        src_mac=bytes.fromhex(src_mac.replace(":", "")),
        dst_mac=bytes.fromhex(dst_mac.replace(":", "")),
    )


class LiveGen:
    def __init__(self, frame, v6=False):
        from bcc import BPF

        self.frame = bytes(frame)
        cflags = ["-DFRAME_LEN=%d" % len(frame), "-I" + HERE] + (["-DSPOOF_V6"] if v6 else [])
        with open(SOURCE, "rb") as f:
            self.bpf = BPF(text=f.read(), cflags=cflags)
        self.gen_fd = self.bpf.load_func(b"gen", BPF.XDP).fd
        self.sink_fd = self.bpf.load_func(b"sink", BPF.XDP).fd
        cfg = self.bpf[b"gen_cfg"]
        value = cfg.Leaf()
        ct.memmove(ct.addressof(value), self.frame, len(self.frame))
        cfg[ct.c_int(0)] = value
        self._sink = None

    def attach_sink(self, ns, ifname):
        """The counter on ifname in ns, in place of whatever XDP was there."""
        self._sink = (ns, xdp_replace(ns, ifname, self.sink_fd))

    def counts(self):
        """{synack, rst, other}: frames the sink saw so far."""
        t = self.bpf[b"sink_count"]
        return {name: sum(t[ct.c_int(i)]) for i, name in enumerate(("synack", "rst", "other"))}

    def send(self, ns, ifname, count, seconds, cpu=0):
        """count frames out of ifname (in ns) as fast as the receiver takes
        them, from this thread pinned to cpu; stops early after `seconds`.
        Returns (frames sent, wall seconds)."""
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            with netns.netns(ns):
                idx = netlink.ifindex(ifname)
                # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
                ctx = struct.pack("<6I", 0, len(self.frame), 0, idx, 0, 0)
                runs = {}
                sent, t0 = 0, time.monotonic()
                deadline = t0 + seconds
                while sent < count and time.monotonic() < deadline:
                    n = min(CHUNK, count - sent)
                    if n not in runs:
                        r = libbpf.TestRun(self.gen_fd, self.frame, repeat=n, ctx=ctx)
                        r.opts.data_out, r.opts.flags = None, BPF_F_TEST_XDP_LIVE_FRAMES
                        runs[n] = r
                    runs[n].run()
                    sent += n
                return sent, time.monotonic() - t0
        finally:
            os.sched_setaffinity(0, before)

    def cleanup(self):
        if self._sink:
            ns, idx = self._sink
            with netns.netns(ns):
                try:
                    netlink.xdp_detach(idx, "native")
                except OSError:
                    pass
            self._sink = None
        self.bpf.cleanup()
