"""A SYN flood that reaches the server's XDP as a NIC's frames do, without
BPF_PROG_RUN's live-frames mode: frames bounce between two XDP programs
(bouncegen.c).

The attacker's veth runs `bounce`: each frame that comes back from the
server is rewritten into the next spoofed SYN and sent with XDP_TX, so it
crosses the veth as an xdp_frame, lands in the server veth's ring and is
run through the server's XDP in its NAPI poll, in batches, where both ends
run native XDP. The chains are seeded with a few frames per CPU from
AF_PACKET (those few are skbs) and stop by themselves: each CPU has a
budget of SYNs in a per-CPU map and every frame past it, or past a
deadline, is dropped.

The flood rate is the defence's own answering rate (the CPU runs the chain
flat out), so what a flood measures is CPU per SYN and SYNs/s at
saturation. A defence that does not answer a SYN ends that frame's chain:
the driver starts `inflight` frames per CPU, re-seeds a CPU whose chain
bounced nothing for a timer's tick (10 ms), stops when nothing moved for
0.5 s, and reports what it seeded and what never came back ("lost"). A
defence that drops some SYNs thins the chain until it dies and is seeded
again: its rate is then below saturation, and says so.

The kernel's own defences answer with skbs, which the attacker's veth must
copy into XDP buffers before `bounce` runs: a cost a NIC's transmit does
not have, charged here to those defences. `reflect` / `reflect_tc` (the
baselines) and `rcv_cost()` measure it.
"""

import ctypes as ct
import os
import random
import socket
import threading
import time

from common import xdp_replace
from synguard import netlink, packets
from synguard.lab import netns

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "bouncegen.c")
KINDS = ("synack", "rst", "other", "sent", "stopped", "short")
TC_ATTACH = {"parent": "ffff:fff2", "classid": 1, "direct_action": True}  # clsact ingress


class Bounce:
    def __init__(self, frame, ext=None):
        """frame: frame_template()'s; ext: the IPv6 extension headers it was
        made with (packets.tcp_frame's), None for an IPv4 template."""
        from bcc import BPF

        self.frame, self.ext = bytes(frame), ext
        cflags = ["-DFRAME_LEN=%d" % len(frame), "-I" + HERE]
        if ext is not None:
            l4 = 14 + 40 + sum(2 + len(body) for _, body in ext)
            cflags += ["-DSPOOF_V6", "-DL4_OFF=%d" % l4]
        with open(SOURCE, "rb") as f:
            self.bpf = BPF(text=f.read(), cflags=cflags)
        self.bounce_fd = self.bpf.load_func(b"bounce", BPF.XDP).fd
        self.reflect_fd = self.bpf.load_func(b"reflect", BPF.XDP).fd
        self.reflect_tc_fd = self.bpf.load_func(b"reflect_tc", BPF.SCHED_CLS).fd
        self._pass = BPF(text=b"int p(struct xdp_md *ctx) { return XDP_PASS; }")
        self.pass_fd = self._pass.load_func(b"p", BPF.XDP).fd
        self.cfg = self.bpf[b"bounce_cfg"]
        self.budget = self.bpf[b"budget"]
        self.ncpu = self.budget.total_cpu
        self.set_cfg(0)
        self._attached = []

    # --- set-up ---------------------------------------------------------

    def set_cfg(self, deadline_ns):
        value = self.cfg.Leaf()
        ct.memmove(ct.addressof(value), self.frame, len(self.frame))
        value.deadline_ns = deadline_ns
        self.cfg[ct.c_int(0)] = value

    def set_budget(self, per_cpu):
        self.budget[ct.c_int(0)] = self.budget.Leaf(*[per_cpu.get(c, 0) for c in range(self.ncpu)])

    def _xdp(self, ns, ifname, fd):
        self._attached.append(("xdp", ns, xdp_replace(ns, ifname, fd)))

    def attach(self, ns, ifname):
        """`bounce` on the attacker's veth, in place of whatever XDP was there."""
        self._xdp(ns, ifname, self.bounce_fd)

    def reflector(self, ns, ifname, path="xdp"):
        """The baseline on the server's veth: every frame back as an
        xdp_frame (XDP_TX, path "xdp") or as an skb (XDP_PASS, then tc
        ingress redirects it out again, path "skb"). Returns its tear-down."""
        if path == "xdp":
            self._xdp(ns, ifname, self.reflect_fd)
        else:
            self._xdp(ns, ifname, self.pass_fd)
            with netns.netns(ns):
                idx = netlink.ifindex(ifname)
                netlink.clsact_create(idx)
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    ipr.tc(
                        "add-filter", "bpf", idx, ":1", fd=self.reflect_tc_fd, name="reflect_tc", **TC_ATTACH
                    )

        def down():
            with netns.netns(ns):
                idx = netlink.ifindex(ifname)
                netlink.xdp_detach(idx, "native")
                if path == "skb":
                    netlink.clsact_destroy(idx)

        return down

    def detach(self):
        for _, ns, idx in self._attached:
            try:
                with netns.netns(ns):
                    netlink.xdp_detach(idx, "native")
            except OSError:
                pass
        self._attached = []

    def cleanup(self):
        self.detach()
        self.bpf.cleanup()
        self._pass.cleanup()

    # --- counting -------------------------------------------------------

    def counts(self):
        """{kind: [per CPU]} for KINDS."""
        t = self.bpf[b"bounce_count"]
        return {name: list(t[ct.c_int(i)]) for i, name in enumerate(KINDS)}

    @staticmethod
    def total(counts):
        return {k: sum(v) for k, v in counts.items()}

    # --- the flood ------------------------------------------------------

    def seeds(self, dst_ip, dport, n):
        """n spoofed SYNs made in Python (the same fields random as bounce's)."""
        out = []
        for _ in range(n):
            if self.ext is None:
                src = "198.19.%d.%d" % divmod(random.randrange(1, 65535), 256)
            else:
                src = "2001:db8:19::%x" % random.randrange(1, 65535)
            out.append(
                packets.tcp_frame(
                    src,
                    dst_ip,
                    random.randrange(1024, 65536),
                    dport,
                    seq=random.getrandbits(32),
                    flags=packets.SYN,
                    options=self._options,
                    src_mac=self.frame[6:12],
                    dst_mac=self.frame[0:6],
                    ext=self.ext or (),
                )
            )
        return out

    _options = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(1, 0))

    def flood(
        self,
        ns,
        ifname,
        count,
        seconds,
        cpus=(0,),
        inflight=128,
        tick=0.01,
        stall=0.5,
        dst=("198.18.10.2", 8080),
    ):
        """About `count` SYNs out of ifname (in ns), the chains running on
        `cpus` (count split evenly), `inflight` frames per CPU, a chain
        seeded anew when it bounced nothing for `tick` s; stops after `seconds` at
        the latest, or when no SYN was bounced for `stall` s (a defence
        that answers nothing). Returns {sent, seeded, reseeds, seconds, ...}; `seconds`
        is from the first seed to the last SYN sent (the kernel's clock, in
        the program)."""
        share = {c: count // len(cpus) + (1 if i < count % len(cpus) else 0) for i, c in enumerate(cpus)}
        c0 = self.counts()
        with netns.netns(ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        seeded = dict.fromkeys(cpus, 0)
        reseeds, stalled = 0, False
        try:
            sock.bind((ifname, 0))
            self.set_budget(share)
            t0 = time.monotonic_ns()
            deadline = t0 + int(seconds * 1e9)
            self.set_cfg(deadline)
            progress, moved = 0, time.monotonic_ns()
            before = c0["sent"]
            for c, n in self._seed(sock, {c: min(inflight, share[c]) for c in cpus}, dst).items():
                seeded[c] += n
            while True:
                time.sleep(tick)
                now = time.monotonic_ns()
                # received before sent: a frame counted as sent was counted as received first
                got = self.counts()
                left = list(self.budget[ct.c_int(0)])
                if not any(left[c] for c in cpus) or now > deadline:
                    break
                if sum(got["sent"]) != progress:
                    progress, moved = sum(got["sent"]), now
                elif now - moved > stall * 1e9:
                    stalled = True
                    break
                # A chain that bounced nothing for a tick lost its frames
                # (a round trip takes microseconds): seed it anew.
                lacking = {c: min(inflight, left[c]) for c in cpus if left[c] and got["sent"][c] == before[c]}
                before = got["sent"]
                if lacking:
                    for c, n in self._seed(sock, lacking, dst).items():
                        seeded[c] += n
                    reseeds += 1
            t1 = time.monotonic_ns()
            # what is still in flight comes back and is dropped
            time.sleep(0.05)
        finally:
            self.set_budget({})
            self.set_cfg(0)
            sock.close()
        c1 = self.counts()
        d = {k: [b - a for a, b in zip(c0[k], c1[k])] for k in c1}
        lasts = list(self.bpf[b"last_tx"][ct.c_int(0)])
        last = max(lasts)
        sent = sum(d["sent"]) + sum(seeded.values())
        back = sum(sum(d[k]) for k in ("synack", "rst", "other"))
        return {
            "sent": sent,
            "lost": max(0, sent - back),
            "bounced": sum(d["sent"]),
            "seeded": sum(seeded.values()),
            "reseeds": reseeds,
            "per_cpu_sent": [d["sent"][c] + seeded.get(c, 0) for c in range(self.ncpu)],
            "seconds": (last - t0) / 1e9 if last > t0 else (t1 - t0) / 1e9,
            # each chain's own: a CPU that other work held back ends later
            "per_cpu_seconds": [round((lasts[c] - t0) / 1e9, 4) if lasts[c] > t0 else None for c in cpus],
            "timed_out": t1 > deadline,
            "stalled": stalled,
            "back": {k: sum(d[k]) for k in ("synack", "rst", "other")},
            "stopped": sum(d["stopped"]),
            "short": sum(d["short"]),
        }

    def _seed(self, sock, plan, dst):
        """plan[cpu] SYNs from AF_PACKET on each cpu, the CPUs at once: one
        thread per CPU, pinned (a packet socket picks its queue by the
        sending CPU and veth's peer queue follows it), started together.
        Each send also runs the softirqs it raised, so the first CPU's
        chain starts during its own seeding; one thread seeding every CPU
        in turn started the second chain up to 0.8 s late. Returns plan."""
        frames = {c: self.seeds(dst[0], dst[1], n) for c, n in plan.items()}
        start = threading.Barrier(len(plan))

        def send(cpu):
            os.sched_setaffinity(0, {cpu})  # this thread only
            start.wait()
            for f in frames[cpu]:
                sock.send(f)

        threads = [threading.Thread(target=send, args=(c,)) for c in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return plan


def frame_template(dst_mac, src_mac, dst="198.18.10.2", dport=8080, ext=None):
    """The SYN bounce writes (Linux's options, 74 bytes), its varying fields
    zero; with ext (IPv6 extension headers, packets.tcp_frame's), an IPv6
    SYN from 2001:db8:19::/112 to dst behind them."""
    return packets.tcp_frame(
        "198.19.0.0" if ext is None else "2001:db8:19::",
        dst,
        0,
        dport,
        seq=0,
        flags=packets.SYN,
        options=Bounce._options,
        src_mac=bytes.fromhex(src_mac.replace(":", "")),
        dst_mac=bytes.fromhex(dst_mac.replace(":", "")),
        ext=ext or (),
    )
