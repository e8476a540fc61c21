"""SYN and ACK floods against synguard, kernel syncookies and nftables SYNPROXY,
side by side in one run, in the namespace test bed.

    client ns (real clients) ---- server ns (listener, the defence) ---- attacker ns (generator)

The attacker has a link of its own, a veth with 2 queues each way (XPS:
queue i on CPU i at both ends, as a NIC's RSS and XPS spread flows).
Three parts, each naming the way its SYNs are delivered (METHODS):

1. Rounds: the same count of spoofed SYNs (198.19.0.0/16, random ports and
   ISNs, Linux's options) per defence, interleaved, with the generators:
   - live frames (livegen: BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)
     where the kernel allows them (probed once: "live frames: refused:
     EPERM" otherwise), or the bounce (bouncegen: XDP_TX between the
     attacker's XDP and the server's, seeded from AF_PACKET, a budget in a
     map). Both deliver xdp_frames into the server veth's NAPI poll, as a
     NIC's frames reach XDP. --generators auto picks; live or bounce name one.
   - trafgen (AF_PACKET skbs that veth copies for XDP): the lower bound.
   Per SYN: the machine's busy CPU (/proc/stat, all cores) minus the same
   generator's baseline (null: XDP_DROP on the server; for the bounce, whose
   rate is the defence's own answering rate: a reflector that XDP_TXes each
   SYN back), and for synguard the controller's CPU until its syncache is
   empty again. The skb reflector (XDP_PASS, tc redirects the skb back out)
   measures what answering through the kernel's skb path costs the bounce.
2. Scaling: the bounce at saturation with one chain on CPU 0, then one chain
   per CPU, per defence: SYNs/s and the 2 / 1 ratio.
3. Stepped rates (trafgen, pinned to CPU 0, 100k-200k/s and its maximum,
   real clients connecting throughout), then an ACK flood. SYN-ACKs/s
   returned, busy CPU minus a server that XDP_DROPs (the generator's own
   cost), real clients' connect-and-echo, the controller's CPU.

Defences: synguard (default settings and syncookies_only=1 in the rounds;
native and generic XDP in the stepped floods; the reflection limit off: one
generator stands for many sources), kernel syncookies
(net.ipv4.tcp_syncookies=2, no XDP), nftables SYNPROXY.

4. --ext-rounds N: the extension-header flood, the bounce's IPv6 SYNs with
   and without one destination options header against synguard (default,
   cookies only), above the reflector of the same SYNs (flood_ext.md).

usage: sudo python bench/flood.py [--rounds 3] [--count N] [--generators auto,trafgen]
                                  [--scaling-count N] [--no-stepped] [--out docs/bench]
                                  [--ext-rounds N] [--ext-count N]
"""

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import livegen
from bouncegen import Bounce, frame_template
from common import PORT, SYNPROXY
from livegen import LiveGen, template
from synguard import netlink
from synguard.lab import netns
from synguard.lab.testbed import SERVER4, SERVER6, SPOOF_NET4, EchoServer, Testbed, trafgen_spoofed, xdp_stub
from synguard.maps import Maps

HZ = os.sysconf("SC_CLK_TCK")


def busy_jiffies():
    """Busy jiffies per CPU (everything but idle and iowait)."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out.append(sum(v) - v[3] - v[4])
    return out


def link_stats(ns, ifname):
    r = netns.run(ns, ["ip", "-s", "-j", "link", "show", ifname], capture_output=True, text=True, check=True)
    s = json.loads(r.stdout)[0]["stats64"]
    return s["tx"]["packets"], s["rx"]["packets"]


def ksoftirqd_pids():
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().startswith("ksoftirqd/"):
                    out.append(int(pid))
        except (OSError, ValueError):
            continue
    return out


def rusage_cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def link_drops(bed):
    """Drop counters of both ends of the attacker's link ({end: (rx, tx)}):
    a veth counts a frame its peer's full ring refused as its own tx drop."""
    out = {}
    for end, ns, ifname in (
        ("attacker", bed.attacker_ns, bed.attacker_if),
        ("server", bed.server_ns, bed.attack_if),
    ):
        r = netns.run(
            ns, ["ip", "-s", "-j", "link", "show", ifname], capture_output=True, text=True, check=True
        )
        st = json.loads(r.stdout)[0]["stats64"]
        out[end] = (st["rx"]["dropped"], st["tx"]["dropped"])
    return out


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / HZ


class Bench:
    def __init__(self, bed, seconds, tmp):
        self.bed, self.seconds, self.tmp = bed, seconds, tmp
        self.controllers = []

    def trafgen(self, kind, rate):
        # The server's own MAC: the kernel's TCP ignores frames not sent to it.
        r = netns.run(
            self.bed.server_ns,
            ["ip", "-j", "link", "show", self.bed.attack_if],
            capture_output=True,
            text=True,
            check=True,
        )
        mac = json.loads(r.stdout)[0]["address"]
        conf = os.path.join(self.tmp, kind + ".cfg")
        trafgen_spoofed(conf, kind, mac, "02:00:00:00:0a:01", "198.18.10.2", PORT)
        argv = [
            "timeout",
            str(self.seconds),
            "taskset",
            "-c",
            "0",
            "trafgen",
            "--dev",
            self.bed.attacker_if,
            "--conf",
            conf,
            "-P",
            "1",
            "-n",
            str(10**9),
        ]
        if rate != "max":
            argv += ["-b", "%dpps" % rate]
        return netns.popen(
            self.bed.attacker_ns,
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def clients(self, stop, out):
        while not stop.is_set():
            # Connect and one echo: with SYNPROXY connect() returns on the
            # proxy's SYN-ACK, before the server has the connection.
            t0 = time.monotonic()
            try:
                r = self.bed.connect(SERVER4, PORT, payload=b"q" * 100, timeout=3)
                out.append(time.monotonic() - t0 if r["echo_ok"] else None)
            except OSError:
                out.append(None)
            time.sleep(0.05)

    def counters(self):
        """synguard's counters on the attacker's link (None for the others)."""
        if not self.controllers:
            return None
        r = self.bed.synguard_run("status", self.bed.attack_if, "--json")
        return json.loads(r.stdout)["counters"]

    def step(self, kind, rate):
        """One flood: {offered, sent, answered, cpu, clients...}."""
        connects, stop = [], threading.Event()
        c0 = self.counters()
        worker = threading.Thread(target=self.clients, args=(stop, connects))
        ctl0 = sum(proc_cpu(p.pid) for p in self.controllers)
        tx0, rx0 = link_stats(self.bed.attacker_ns, self.bed.attacker_if)
        cpu0, t0 = busy_jiffies(), time.monotonic()
        worker.start()
        self.trafgen(kind, rate).wait()
        elapsed = time.monotonic() - t0
        cpu1 = busy_jiffies()
        stop.set()
        worker.join()
        tx1, rx1 = link_stats(self.bed.attacker_ns, self.bed.attacker_if)
        c1 = self.counters()
        ok = sorted(c for c in connects if c is not None)
        return {
            "synguard": {
                k: c1[k] - c0[k] for k in ("sendcookie", "badcookie", "retransmitted", "added", "zonefail")
            }
            if c0
            else None,
            "kind": kind,
            "offered": rate,
            "seconds": round(elapsed, 2),
            "sent": tx1 - tx0,
            "sent_per_s": round((tx1 - tx0) / elapsed),
            "answered_per_s": round((rx1 - rx0) / elapsed),
            "cpu_per_s": [round((b - a) / HZ / elapsed, 3) for a, b in zip(cpu0, cpu1)],
            "controller_cpu_per_s": round(
                (sum(proc_cpu(p.pid) for p in self.controllers) - ctl0) / elapsed, 4
            ),
            "connects": len(connects),
            "connects_ok": len(ok),
            "connect_echo_median_ms": round(1000 * statistics.median(ok), 3) if ok else None,
            "connect_echo_p99_ms": round(1000 * ok[min(len(ok) - 1, int(len(ok) * 0.99))], 3) if ok else None,
        }


def setup(bench, defence):
    """Bring the defence up in the server namespace; returns its tear-down."""
    bed = bench.bed
    if defence.startswith("synguard"):
        mode = defence.split("-")[1]
        bench.controllers = [
            bed.attach(
                [PORT], "--mode", mode, "--no-metrics", "--ratelimit", "0", "--rotate-seconds", "600", iface=i
            )
            for i in (bed.server_if, bed.attack_if)
        ]

        def down():
            for p in bench.controllers:
                p.send_signal(signal.SIGQUIT)  # stop now: no drain between rounds
                p.wait(30)
            bench.controllers = []

        return down
    if defence == "kernel-syncookies":
        bed.sysctl(bed.server_ns, "net.ipv4.tcp_syncookies", 2)
        return lambda: bed.sysctl(bed.server_ns, "net.ipv4.tcp_syncookies", 1)
    if defence == "nft-synproxy":
        netns.run(bed.server_ns, ["nft", "-f", "-"], input=SYNPROXY, text=True, check=True)
        bed.sysctl(bed.server_ns, "net.netfilter.nf_conntrack_tcp_loose", 0)
        return lambda: netns.run(
            bed.server_ns, ["nft", "delete", "table", "ip", "synproxy_bench"], check=True
        )
    if defence == "null":
        drop = xdp_stub(bed.server_ns, bed.attack_if, "XDP_DROP")

        def down():
            with netns.netns(bed.server_ns):
                netlink.xdp_detach(netlink.ifindex(bed.attack_if), "native")
            drop.cleanup()

        return down
    raise ValueError(defence)


# The null run (the generator's own cost) three times, between the others:
# the machine's drift over the run then shows in it and its median is used.
ORDER = ["null", "synguard-native", "synguard-generic", "null", "kernel-syncookies", "nft-synproxy", "null"]


def summarise(results):
    """Per defence: the CPU time of a SYN above the null run at the same
    offered rate (rows where every SYN was answered and CPU 0, where the
    generator and the receive path both run, was not yet saturated), split
    into what the controller spent and the rest; the SYN-ACK capacity of one
    core that implies; the highest rate answered in full; for the ACK flood,
    the share dropped and what the defence sent back."""
    null = {}
    for run in results["null"]:
        for r in run:
            if r["kind"] == "syn":
                null.setdefault(r["offered"], []).append(sum(r["cpu_per_s"]))
    null = {rate: statistics.median(v) for rate, v in null.items()}
    out = {}
    for d, rows in results.items():
        if d == "null":
            continue
        syn = [r for r in rows if r["kind"] == "syn"]
        full = [r for r in syn if r["answered_per_s"] >= 0.95 * r["sent_per_s"]]
        costs, ctl = [], []
        for r in full:
            n = null.get(r["offered"])
            if r["offered"] == "max" or n is None or max(r["cpu_per_s"]) >= 0.95:
                continue
            costs.append((sum(r["cpu_per_s"]) - n) / r["sent_per_s"])
            ctl.append(r["controller_cpu_per_s"] / r["sent_per_s"])
        cost = statistics.median(costs) if costs else None
        ack = next(r for r in rows if r["kind"] == "ack")
        dropped = None
        if ack["synguard"]:
            dropped = round(ack["synguard"]["badcookie"] / ack["sent"], 4)
        out[d] = {
            "us_per_syn": round(cost * 1e6, 3) if cost else None,
            "us_per_syn_controller": round(statistics.median(ctl) * 1e6, 3) if ctl else None,
            "syns_per_core": round(1 / cost) if cost and cost > 0 else None,
            "max_rate_answered_in_full": max((r["sent_per_s"] for r in full), default=0),
            "ack_flood_sent_per_s": ack["sent_per_s"],
            "ack_flood_dropped_share": dropped,
            "ack_flood_answers_per_s": ack["answered_per_s"],
            "legit_connects": "%d/%d"
            % (sum(r["connects_ok"] for r in rows), sum(r["connects"] for r in rows)),
            "legit_connect_echo_p99_ms": max((r["connect_echo_p99_ms"] or 0) for r in rows),
        }
    for d in out:
        for other in ("kernel-syncookies", "nft-synproxy"):
            if d.startswith("synguard") and out[d]["us_per_syn"] and out.get(other, {}).get("us_per_syn"):
                out[d]["capacity_vs_" + other] = round(out[other]["us_per_syn"] / out[d]["us_per_syn"], 2)
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    colour = {d: "C%d" % i for i, d in enumerate(results)}  # the same in both panels
    for d, rows in results.items():
        if d == "null":
            rows = rows[0]  # one of the three
        syn = [r for r in rows if r["kind"] == "syn"]
        x = [r["sent_per_s"] / 1000 for r in syn]
        if d != "null":
            a.plot(x, [r["answered_per_s"] / 1000 for r in syn], marker="o", label=d, color=colour[d])
        b.plot(x, [100 * sum(r["cpu_per_s"]) for r in syn], marker="o", label=d, color=colour[d])
    a.set(xlabel="spoofed SYNs sent (k/s)", ylabel="SYN-ACKs returned (k/s)", title="SYN-ACK rate")
    b.set(
        xlabel="spoofed SYNs sent (k/s)",
        ylabel="busy CPU, both cores (%, 200 = both)",
        title="CPU, generator included",
    )
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- the headline: the same count of SYNs per defence, interleaved rounds ---

# trafgen's SYN for the per-SYN comparison: the generators' frame (Linux
# options: MSS 1460, SACK-permitted, timestamps, NOP, wscale 7).
TRAFGEN_LINUX = """
{
  %(dst_mac)s,  %(src_mac)s,  0x08, 0x00,
  0x45, 0x00, const16(60), drnd(2), const16(0x4000), 64, 6, csumip(14, 33),
  198, 19, drnd(2),  198, 18, 10, 2,
  drnd(2), const16(%(port)d), drnd(4), const32(0), 0xa0, 0x02, const16(64240), csumtcp(14, 34), const16(0),
  0x02, 0x04, 0x05, 0xb4,  0x04, 0x02, 0x08, 0x0a,  const32(1), const32(0),  0x01, 0x03, 0x03, 0x07,
}
"""
# How each generator delivers its SYNs, as the output and the tables name it.
METHODS = {
    "live": "live frames (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX: xdp_frames)",
    "bounce": "bounce (XDP_TX between the attacker's and the server's XDP: xdp_frames)",
    "trafgen": "trafgen (AF_PACKET: skbs the server veth copies for XDP; the lower bound)",
}
# The baseline each generator's figures are taken above.
BASELINES = {
    "live": "null: the server XDP_DROPs every SYN",
    "trafgen": "null: the server XDP_DROPs every SYN",
    "bounce": "reflector: the server XDP_TXes every SYN back as it is",
}
ROUND_DEFENCES = [
    "baseline",
    "skb-reflector",  # bounce only: the kernel's skb path answers, trivially
    "kernel-syncookies",
    # trafgen only: the same with an XDP_PASS program on the server's veth,
    # which then copies each skb into an XDP buffer (the copy the bounce's
    # attacker side makes of the kernel's answers)
    "kernel-syncookies-xdp-pass",
    "nft-synproxy",
    "synguard-default",
    "synguard-cookies-only",
]
ONLY = {"skb-reflector": "bounce", "kernel-syncookies-xdp-pass": "trafgen"}
SCALING_DEFENCES = [
    "baseline",
    "kernel-syncookies",
    "nft-synproxy",
    "synguard-default",
    "synguard-cookies-only",
]


def macs(bed):
    server = netns.link_attr(bed.server_ns, bed.attack_if, "IFLA_ADDRESS")
    attacker = netns.link_attr(bed.attacker_ns, bed.attacker_if, "IFLA_ADDRESS")
    return server, attacker


class FloodBed(Testbed):
    """The test bed with the attacker's link made with `queues` queues each
    way (RSS-like: a queue per CPU) and XPS mapping queue i to CPU i on both
    ends, so that what a CPU sends, the kernel's SYN-ACKs included, goes
    into the peer's queue of that CPU and is received on it."""

    def __init__(self, queues):
        super().__init__(attacker=True)
        self.queues = queues

    def up(self):
        self.attacker = False  # the client and server namespaces as usual
        super().up()
        self.attacker = True
        netns.create(self.attacker_ns)
        q = ["numtxqueues", str(self.queues), "numrxqueues", str(self.queues)]
        subprocess.run(
            ["ip", "-n", self.server_ns, "link", "add", self.attack_if] + q
            + ["type", "veth", "peer", "name", self.attacker_if] + q + ["netns", self.attacker_ns],
            check=True,
        )  # fmt: skip
        netns.address(self.attacker_ns, self.attacker_if, "198.18.10.1/24")
        netns.address(self.server_ns, self.attack_if, "198.18.10.2/24")
        netns.route(self.server_ns, str(SPOOF_NET4), "198.18.10.1")
        mac = netns.link_attr(self.attacker_ns, self.attacker_if, "IFLA_ADDRESS")
        netns.neigh(self.server_ns, self.attack_if, "198.18.10.1", mac)
        ncpu = os.cpu_count()
        for ns, ifname in ((self.server_ns, self.attack_if), (self.attacker_ns, self.attacker_if)):
            script = "; ".join(
                "echo %x > /sys/class/net/%s/queues/tx-%d/xps_cpus" % (1 << (i % ncpu), ifname, i)
                for i in range(self.queues)
            )
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script], check=True)
        self._stubs.append(xdp_stub(self.attacker_ns, self.attacker_if, "XDP_DROP"))


class Rounds:
    """Floods of `count` SYNs per defence and generator, measured as machine
    busy CPU over the flood (/proc/stat, both cores) and, for synguard, the
    controller's CPU (/proc/PID/stat) from the flood's end until its
    syncache is empty again (retransmissions and expiry).

    The attacker's veth runs bouncegen's `bounce` throughout: with a budget
    it is the bounce generator, without one a sink that counts what comes
    back (for the live frames and trafgen)."""

    def __init__(self, bed, count, tmp, rexmtbase, live=False, settle_timeout=90):
        self.bed, self.count, self.tmp, self.rexmtbase = bed, count, tmp, rexmtbase
        self.settle_timeout = settle_timeout
        server_mac, attacker_mac = macs(bed)
        self.bounce = Bounce(frame_template(server_mac, attacker_mac, dst=SERVER4, dport=PORT))
        self.bounce.attach(bed.attacker_ns, bed.attacker_if)
        self.live = LiveGen(template(SERVER4, PORT, server_mac, attacker_mac)) if live else None
        fmt = lambda mac: ", ".join("0x" + b for b in mac.split(":"))  # noqa: E731
        self.trafgen_conf = os.path.join(tmp, "syn-linux.cfg")
        with open(self.trafgen_conf, "w") as f:
            f.write(TRAFGEN_LINUX % {"dst_mac": fmt(server_mac), "src_mac": fmt(attacker_mac), "port": PORT})
        self.controller = self.maps = None
        self.ksoftirqd = ksoftirqd_pids()

    def close(self):
        if self.live:
            self.live.cleanup()
        self.bounce.cleanup()

    def send(self, generator, count, cpus):
        """(SYNs sent, seconds, details) of one flood."""
        if generator == "live":
            sent, s = self.live.send(
                self.bed.attacker_ns, self.bed.attacker_if, count, seconds=60, cpu=cpus[0]
            )
            return sent, s, {}
        if generator == "bounce":
            dst = (SERVER4 if self.bounce.ext is None else SERVER6, PORT)
            r = self.bounce.flood(self.bed.attacker_ns, self.bed.attacker_if, count, 60, cpus=cpus, dst=dst)
            return r["sent"], r["seconds"], r
        t0 = time.monotonic()
        netns.run(
            self.bed.attacker_ns,
            ["timeout", "60", "taskset", "-c", str(cpus[0]), "trafgen", "--dev", self.bed.attacker_if]
            + ["--conf", self.trafgen_conf, "-P", "1", "-n", str(count)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return count, time.monotonic() - t0, {}

    def counters(self):
        return self.maps.read_counters() if self.maps else {}

    def settle(self):
        """Wait until the syncache is empty (nothing for the others); the
        seconds that took."""
        t0 = time.monotonic()
        if self.maps:
            while self.maps.syncache_state.lookup(0).entries:
                if time.monotonic() - t0 > self.settle_timeout:
                    raise RuntimeError("the syncache did not empty in %ds" % self.settle_timeout)
                time.sleep(0.05)
        return time.monotonic() - t0

    def flood(self, generator, count=None, cpus=(0,)):
        count = count or self.count
        ctl = (lambda: proc_cpu(self.controller.pid)) if self.controller else (lambda: 0.0)
        # The generator's own CPU: this thread for the live frames, the
        # child (trafgen) otherwise; the receive path runs in its context
        # (softirqs at the end of each batch or send) or in ksoftirqd. The
        # bounce runs in softirqs wherever they fall: no such figure.
        who = resource.RUSAGE_THREAD if generator == "live" else resource.RUSAGE_CHILDREN
        if self.maps:
            # Each flood meets the syncache as after attach: the pause that
            # the flood before left (16 s, doubling) is cleared.
            st = self.maps.syncache_state.lookup(0)
            st.pause_until_ns, st.backoff = 0, 0
            self.maps.syncache_state.update(0, st)
        g0, k0, d0 = Bounce.total(self.bounce.counts()), self.counters(), link_drops(self.bed)
        ctl0 = ctl()
        soft0 = sum(proc_cpu(p) for p in self.ksoftirqd)
        own0 = rusage_cpu(who)
        cpu0, t0 = busy_jiffies(), time.monotonic()
        sent, seconds, info = self.send(generator, count, cpus)
        cpu1, wall = busy_jiffies(), time.monotonic() - t0
        own1 = rusage_cpu(who)
        soft1 = sum(proc_cpu(p) for p in self.ksoftirqd)
        ctl1 = ctl()
        settle = self.settle()
        ctl2 = ctl()
        time.sleep(0.1)  # the last SYN-ACKs reach the sink
        g1, k1, d1 = Bounce.total(self.bounce.counts()), self.counters(), link_drops(self.bed)
        retransmitted = k1.get("retransmitted", 0) - k0.get("retransmitted", 0)
        synacks = g1["synack"] - g0["synack"]
        return {
            "generator": generator,
            "cpus": list(cpus),
            "sent": sent,
            "seconds": round(seconds, 4),
            "wall_s": round(wall, 3),
            "rate": round(sent / seconds),
            "cpu_s": [round((b - a) / HZ, 3) for a, b in zip(cpu0, cpu1)],
            "generator_s": None if generator == "bounce" else round(own1 - own0, 4),
            "ksoftirqd_s": round(soft1 - soft0, 3),
            "controller_flood_s": round(ctl1 - ctl0, 3),
            "controller_after_s": round(ctl2 - ctl1, 3),
            "settle_s": round(settle, 2),
            "synacks": synacks,
            "retransmitted": retransmitted,
            "answered": synacks - retransmitted,
            "other_back": g1["other"] - g0["other"],
            "rsts": g1["rst"] - g0["rst"],
            "seeded": info.get("seeded"),
            "reseeds": info.get("reseeds"),
            "lost": info.get("lost"),
            "per_cpu_seconds": info.get("per_cpu_seconds"),
            "stalled": info.get("stalled"),
            "link_drops": {end: [b - a for a, b in zip(d0[end], d1[end])] for end in d0},
            "synguard": {
                k: k1[k] - k0[k] for k in ("sendcookie", "added", "zonefail", "badcookie") if k in k1
            },
        }

    def up(self, defence):
        """Set the defence up; returns its tear-down."""
        bed = self.bed
        if defence in ("baseline", "skb-reflector"):
            return lambda: None  # per generator: extra()
        if defence == "kernel-syncookies-xdp-pass":
            defence = "kernel-syncookies"
        if defence == "synguard-default":
            self.controller = bed.attach(
                [PORT],
                "--no-metrics",
                "--ratelimit",
                "0",
                "--rotate-seconds",
                "600",
                "--rexmtbase",
                str(self.rexmtbase),
                iface=bed.attack_if,
            )
            self.maps = Maps(bed.pins(bed.attack_if))
            return lambda: None  # synguard-cookies-only follows on the same controller
        if defence == "synguard-cookies-only":
            if not self.controller:  # run alone
                self.up("synguard-default")
            r = bed.synguard_run("set", bed.attack_if, "syncookies_only=1")
            assert r.returncode == 0, r.stderr

            def down():
                self.maps.close()
                self.maps = None
                self.controller.send_signal(signal.SIGQUIT)  # stop now: no drain
                self.controller.wait(30)
                self.controller = None

            return down
        return setup(_NoBench(bed), defence)

    def extra(self, defence, generator):
        """What a defence needs for one generator; returns its undo. The
        baseline: an XDP_DROP program on the server's veth (live frames,
        trafgen) or the reflector (bounce). The kernel's defences get an
        XDP_PASS program for the generators that send xdp_frames: a veth
        takes them only on an end that runs XDP; they then become skbs in
        veth's NAPI poll, as a driver builds them."""
        bed = self.bed
        if defence == "skb-reflector":
            return self.bounce.reflector(bed.server_ns, bed.attack_if, "skb")
        if defence == "baseline" and generator == "bounce":
            return self.bounce.reflector(bed.server_ns, bed.attack_if, "xdp")
        if defence == "baseline":
            verdict = "XDP_DROP"
        elif defence in ("kernel-syncookies", "nft-synproxy") and generator != "trafgen":
            verdict = "XDP_PASS"
        elif defence == "kernel-syncookies-xdp-pass":
            verdict = "XDP_PASS"
        else:
            return lambda: None
        stub = xdp_stub(bed.server_ns, bed.attack_if, verdict)

        def down():
            with netns.netns(bed.server_ns):
                netlink.xdp_detach(netlink.ifindex(bed.attack_if), "native")
            stub.cleanup()

        return down


class _NoBench:
    """What setup() needs of a Bench for the defences without a controller."""

    def __init__(self, bed):
        self.bed, self.controllers = bed, []


def show(label, row):
    per = " ".join("%.0f%%" % (100 * c / row["wall_s"]) for c in row["cpu_s"])
    print(
        "%-42s %8d SYNs in %6.3fs (%8.0f/s, CPUs busy %s): cpu %s ctl %.2f+%.2f s answered %d%s%s"
        % (
            label,
            row["sent"],
            row["seconds"],
            row["rate"],
            per,
            row["cpu_s"],
            row["controller_flood_s"],
            row["controller_after_s"],
            row["answered"],
            " (+%d retransmitted)" % row["retransmitted"] if row["retransmitted"] else "",
            " seeded %d (%d re-seeds, %d lost%s) chains ended at %s s"
            % (
                row["seeded"],
                row["reseeds"],
                row["lost"],
                ", stalled" if row["stalled"] else "",
                row["per_cpu_seconds"],
            )
            if row["seeded"]
            else "",
        ),
        flush=True,
    )


def rounds(fl, n, generators, defences=ROUND_DEFENCES):
    """n x (every defence x every generator), in the same order each round;
    {defence: [row per round and generator]}."""
    results = {d: [] for d in defences}
    for r in range(n):
        for d in defences:
            gens = [g for g in generators if ONLY.get(d, g) == g]
            if not gens:
                continue
            down = fl.up(d)
            try:
                for g in gens:
                    undo = fl.extra(d, g)
                    try:
                        row = fl.flood(g)
                    finally:
                        undo()
                    row["round"] = r
                    results[d].append(row)
                    show("round %d %s %s" % (r, d, g), row)
            finally:
                down()
    return {d: rows for d, rows in results.items() if rows}


# The extension-header flood: the way around an XDP that leaves IPv6
# extension headers to the kernel, one 8-byte destination options header
# (one PadN) a SYN, against the same SYNs without it.
EXT_TEMPLATES = {
    "bounce, IPv6": [],
    "bounce, IPv6 behind destination options": [(60, b"\x01\x04" + bytes(4))],
}


EXT_DEFENCES = ["baseline", "synguard-default", "synguard-cookies-only"]


def ext_rounds(fl, n, count):
    """n x EXT_DEFENCES (cookies only on the default's controller, which its
    tear-down stops) x EXT_TEMPLATES, bounced: {defence: rows}, each row's
    generator the template's name, so that summary() takes each above its
    own template's baseline."""
    server_mac, attacker_mac = macs(fl.bed)
    bounces = {
        g: Bounce(frame_template(server_mac, attacker_mac, dst=SERVER6, dport=PORT, ext=ext), ext)
        for g, ext in EXT_TEMPLATES.items()
    }
    ipv4, results = fl.bounce, {d: [] for d in EXT_DEFENCES}
    try:
        for r in range(n):
            for d in EXT_DEFENCES:
                down = fl.up(d)
                try:
                    for g, b in bounces.items():
                        fl.bounce = b
                        b.attach(fl.bed.attacker_ns, fl.bed.attacker_if)
                        undo = fl.extra(d, "bounce")
                        try:
                            row = fl.flood("bounce", count)
                        finally:
                            undo()
                        row.update(round=r, generator=g)
                        results[d].append(row)
                        show("ext round %d %s %s" % (r, d, g), row)
                finally:
                    down()
    finally:
        fl.bounce = ipv4
        for b in bounces.values():
            b.cleanup()
        ipv4.attach(fl.bed.attacker_ns, fl.bed.attacker_if)
    return results


def ext_markdown(summ, count, n, f):
    plain, ext = EXT_TEMPLATES
    f.write(
        "The extension-header flood (bounce, one CPU): %d rounds of %d SYNs per template, "
        "interleaved; ns per SYN of the CPU the chain ran on and the controller's (during and "
        "after the flood), above the reflector of the same round and template; median "
        "(lowest-highest round); ratio to the plain IPv6 SYNs.\n\n" % (n, count)
    )
    f.write("| defence | SYNs | ns per SYN | ratio | answered | SYNs/s |\n|---|---|---:|---:|---:|---:|\n")
    for d in EXT_DEFENCES[1:]:
        first = summ[d][plain]["chain_ns_per_syn_with_after"]["median"]
        for g in (plain, ext):
            s = summ[d][g]
            w = s["chain_ns_per_syn_with_after"]
            f.write(
                "| %s | %s | %.0f (%.0f-%.0f) | %.2f | %s | %.0f |\n"
                % (
                    d,
                    g,
                    w["median"],
                    w["min"],
                    w["max"],
                    w["median"] / first,
                    s["answered"],
                    s["rate"]["median"],
                )
            )


def scaling(fl, count, cpu_sets, repeats=2, defences=SCALING_DEFENCES):
    """The bounce on each set of CPUs (one chain per CPU) per defence, the
    sets alternating `repeats` times: {defence: {ncpus: [row per repeat]}}.
    Other work on a CPU takes it from the chain there (seen: CPU 1 busy
    with another session's compile, the reflector scaled 1.4x), so the
    table takes each set's best repeat: what the defence did with the CPUs."""
    out = {}
    for d in defences:
        down = fl.up(d)
        try:
            undo = fl.extra(d, "bounce")
            try:
                for _ in range(repeats):
                    for cpus in cpu_sets:
                        row = fl.flood("bounce", count=count, cpus=cpus)
                        out.setdefault(d, {}).setdefault(len(cpus), []).append(row)
                        show("scaling %s on CPUs %s" % (d, ",".join(map(str, cpus))), row)
            finally:
                undo()
        finally:
            down()
    return out


def summary(results):
    """Per defence and generator: ns of CPU per SYN above the baseline of
    the same round and generator (machine: both cores' busy time), during
    the flood and with the controller's work after it; accounted (live
    frames and trafgen only): generator + ksoftirqd + controller; medians
    and ranges over the rounds; SYNs answered; the flood's rate."""
    base = {(r["round"], r["generator"]): r for r in results["baseline"]}
    out = {}
    for d, rows in results.items():
        for g in sorted({r["generator"] for r in rows}):
            mine = [r for r in rows if r["generator"] == g]
            b = {r["round"]: base[(r["round"], g)] for r in mine}
            per = lambda r, v: v / r["sent"] * 1e9  # noqa: E731
            during = [per(r, sum(r["cpu_s"])) - per(b[r["round"]], sum(b[r["round"]]["cpu_s"])) for r in mine]
            after = [per(r, r["controller_after_s"]) for r in mine]
            chain = [per(r, _chain(r)) - per(b[r["round"]], _chain(b[r["round"]])) for r in mine]
            s = {
                "chain_ns_per_syn_with_after": _stats([a + c for a, c in zip(chain, after)]),
                "ns_per_syn_flood": _stats(during),
                "ns_per_syn_with_after": _stats([a + c for a, c in zip(during, after)]),
                # no baseline taken off: flood CPU + controller, with after
                "ns_per_syn_absolute": _stats([per(r, _chain(r) + r["controller_after_s"]) for r in mine]),
                "controller_after_ns_per_syn": _stats(after),
                "answered_all": all(r["answered"] == r["sent"] for r in mine),
                "answered": "%d/%d" % (sum(r["answered"] for r in mine), sum(r["sent"] for r in mine)),
                "rate": _stats([r["rate"] for r in mine]),
            }
            if not g.startswith("bounce"):  # ext_rounds' generators name their template
                acc = [(_accounted(r) - _accounted(b[r["round"]])) / r["sent"] * 1e9 for r in mine]
                s["accounted_ns_per_syn_flood"] = _stats(acc)
                s["accounted_ns_per_syn_with_after"] = _stats([a + c for a, c in zip(acc, after)])
            else:
                s["seeded"] = sum(r["seeded"] or 0 for r in mine)
                s["lost"] = sum(r["lost"] or 0 for r in mine)
            out.setdefault(d, {})[g] = s
    return out


def _chain(row):
    """CPU seconds of the CPUs the flood ran on (the generator's and the
    receive path's; /proc/stat) plus the controller's: what other work on
    the other core leaves out."""
    return sum(row["cpu_s"][c] for c in row["cpus"]) + row["controller_flood_s"]


def _accounted(row):
    """CPU seconds of the generator (with the receive path in its context),
    ksoftirqd and the controller during a flood."""
    return row["generator_s"] + row["ksoftirqd_s"] + row["controller_flood_s"]


def _stats(v):
    return {"median": round(statistics.median(v), 1), "min": round(min(v), 1), "max": round(max(v), 1)}


def rounds_markdown(summ, count, n, rexmtbase, probe, f):
    def cell(s, bold=True):
        return ("**%.0f** (%.0f-%.0f)" if bold else "%.0f (%.0f-%.0f)") % (s["median"], s["min"], s["max"])

    gens = sorted({g for by in summ.values() for g in by}, key=list(METHODS).index)
    f.write(
        "%d SYNs per flood, %d interleaved rounds; ns of CPU per SYN above the generator's baseline "
        "(median, lowest-highest round); flood CPU: busy time of the CPU the flood ran on (CPU 0: the "
        "generator and the receive path) plus the controller's; machine: both cores' busy time "
        "(/proc/stat); with after: plus "
        "the controller until its syncache is empty (--rexmtbase %s). Live frames on this machine: %s.\n\n"
        % (count, n, rexmtbase, probe or "allowed")
    )
    for g in gens:
        f.write("Method: %s. Baseline: %s.\n\n" % (METHODS[g], BASELINES[g]))
        acc = g != "bounce"
        head = ["defence", "flood CPU + controller, with after", "machine, with after"]
        head += ["accounted, with after"] if acc else []
        head += [
            "absolute (no baseline off)",
            "SYNs/s" + (" (at saturation)" if g == "bounce" else ""),
            "answered",
        ]
        f.write("| %s |\n|%s\n" % (" | ".join(head), "---|" + "---:|" * (len(head) - 1)))
        for d, by in summ.items():
            s = by.get(g)
            if not s:
                continue
            cells = [cell(s["chain_ns_per_syn_with_after"]), cell(s["ns_per_syn_with_after"], False)]
            if acc:
                cells.append(cell(s["accounted_ns_per_syn_with_after"], False))
            r = s["rate"]
            cells += [
                cell(s["ns_per_syn_absolute"], False),
                "%.0fk (%.0fk-%.0fk)" % (r["median"] / 1e3, r["min"] / 1e3, r["max"] / 1e3),
                s["answered"]
                if d not in ("baseline", "skb-reflector")
                else "- (%s)" % s["answered"].split("/")[1],
            ]
            name = d if d != "baseline" else "baseline (%s)" % BASELINES[g].split(":")[0]
            f.write("| %s | %s |\n" % (name, " | ".join(cells)))
        f.write("\n")


def scaling_markdown(sc, count, f):
    repeats = len(next(iter(sc.values()))[1])
    f.write(
        "Method: %s, one chain of 128 frames per CPU on a 2-queue veth (queue i on CPU i, both ends), "
        "%d SYNs per flood, 1 and 2 CPUs alternating, %d times each; the best of them (the other in "
        "brackets). SYNs/s at saturation: SYNs / seconds from the first seed to the last SYN; "
        "busy: each CPU's busy share of the flood's wall time, seeding and draining included "
        "(/proc/stat); chains ended: each one's last SYN, "
        "from the first seed (a chain that other work held back ends later).\n\n"
        % (METHODS["bounce"], count, repeats)
    )
    f.write(
        "| defence | 1 CPU: SYNs/s | busy | 2 CPUs: SYNs/s | busy | chains ended (s) | 2 / 1 | answered |\n"
    )
    f.write("|---|---:|---|---:|---|---|---:|---:|\n")
    for d, by in sc.items():
        one, two = (max(by[n], key=lambda r: r["rate"]) for n in (1, 2))
        others = {n: [r["rate"] for r in by[n] if r is not b] for n, b in ((1, one), (2, two))}
        busy = lambda r: " ".join("%.0f%%" % (100 * c / r["wall_s"]) for c in r["cpu_s"])  # noqa: E731
        f.write(
            "| %s | %.0fk (%s) | %s | %.0fk (%s) | %s | %s | **%.2f** | %d/%d |\n"
            % (
                d if d != "baseline" else "baseline (reflector)",
                one["rate"] / 1e3,
                ", ".join("%.0fk" % (x / 1e3) for x in others[1]),
                busy(one),
                two["rate"] / 1e3,
                ", ".join("%.0fk" % (x / 1e3) for x in others[2]),
                busy(two),
                " / ".join("%.2f" % x for x in two["per_cpu_seconds"] or []),
                two["rate"] / one["rate"],
                sum(r["answered"] for n in by for r in by[n]) if d != "baseline" else 0,
                sum(r["sent"] for n in by for r in by[n]),
            )
        )
    f.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rates", default="100000,150000,200000,max")
    ap.add_argument("--out", default="docs/bench")
    ap.add_argument("--count", type=int, default=1_000_000, help="SYNs per flood in the interleaved rounds")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (0: none)")
    ap.add_argument(
        "--generators",
        default="auto,trafgen",
        help="of the rounds: live, bounce, trafgen; auto: live frames where the kernel allows them "
        "(probed once), the bounce otherwise",
    )
    ap.add_argument(
        "--rexmtbase",
        type=float,
        default=0.25,
        help="synguard's rexmtbase in the rounds (1 = its default: entries live 15 s, 3.75 s at 0.25)",
    )
    ap.add_argument(
        "--scaling-count", type=int, default=1_000_000, help="SYNs per flood, 1 vs 2 CPUs (0: none)"
    )
    ap.add_argument("--no-stepped", action="store_true", help="leave out the stepped-rate trafgen floods")
    ap.add_argument(
        "--ext-rounds",
        type=int,
        default=0,
        help="rounds of the extension-header flood against synguard (0: none)",
    )
    ap.add_argument("--ext-count", type=int, default=1_000_000, help="SYNs per extension-header flood")
    args = ap.parse_args(argv)
    rates = [r if r == "max" else int(r) for r in args.rates.split(",")]
    load0 = os.getloadavg()
    probe = livegen.probe()
    print("live frames: %s" % (probe or "allowed"), flush=True)
    generators = []
    for g in args.generators.split(","):
        g = ("bounce" if probe else "live") if g == "auto" else g
        if g not in METHODS:
            ap.error("unknown generator %s" % g)
        if g == "live" and probe:
            ap.error("live frames %s on this machine: use --generators bounce" % probe)
        if g not in generators:
            generators.append(g)
    for g in generators:
        print("generator %s: %s" % (g, METHODS[g]), flush=True)
    results, round_results, round_sum, scale = {}, None, None, None
    cpu_sets = [(0,), tuple(range(min(2, os.cpu_count())))]
    os.makedirs(args.out, exist_ok=True)
    with FloodBed(queues=len(cpu_sets[-1])) as bed, tempfile.TemporaryDirectory() as tmp:
        srv = EchoServer(bed, PORT)
        bench = Bench(bed, args.seconds, tmp)
        fl = Rounds(bed, args.count, tmp, args.rexmtbase, live="live" in generators)
        idle = None
        try:
            if args.rounds:
                t0 = time.monotonic()
                round_results = rounds(fl, args.rounds, generators)
                round_sum = summary(round_results)
                print(json.dumps(round_sum, indent=1))
                print("rounds took %.0f s" % (time.monotonic() - t0), flush=True)
                with open(os.path.join(args.out, "flood_rounds.md"), "w") as f:
                    rounds_markdown(round_sum, args.count, args.rounds, args.rexmtbase, probe, f)
            if args.ext_rounds:
                t0 = time.monotonic()
                ext_sum = summary(ext_rounds(fl, args.ext_rounds, args.ext_count))
                print(json.dumps(ext_sum, indent=1))
                print("extension-header rounds took %.0f s" % (time.monotonic() - t0), flush=True)
                with open(os.path.join(args.out, "flood_ext.md"), "w") as f:
                    ext_markdown(ext_sum, args.ext_count, args.ext_rounds, f)
            if args.scaling_count and len(cpu_sets[-1]) > 1:
                t0 = time.monotonic()
                scale = scaling(fl, args.scaling_count, cpu_sets)
                print("scaling took %.0f s" % (time.monotonic() - t0), flush=True)
                with open(os.path.join(args.out, "flood_scaling.md"), "w") as f:
                    scaling_markdown(scale, args.scaling_count, f)
            if not args.no_stepped:
                print("stepped floods: %s" % METHODS["trafgen"], flush=True)
            for d in [] if args.no_stepped else ORDER:
                down = setup(bench, d)
                try:
                    if d == "synguard-native":  # the controller with nothing to do
                        c0 = sum(proc_cpu(p.pid) for p in bench.controllers)
                        time.sleep(5)
                        idle = (
                            (sum(proc_cpu(p.pid) for p in bench.controllers) - c0)
                            / 5
                            / len(bench.controllers)
                        )
                    if d == "null":
                        run = [bench.step("syn", r) for r in rates]
                        results.setdefault("null", []).append(run)
                    else:
                        run = results[d] = [bench.step("syn", r) for r in rates] + [bench.step("ack", "max")]
                finally:
                    down()
                for r in run:
                    print(
                        "%-18s %s %7s: sent %7d/s answered %7d/s cpu %s ctl %.3f clients %d/%d p99 %s ms"
                        % (
                            d,
                            r["kind"],
                            r["offered"],
                            r["sent_per_s"],
                            r["answered_per_s"],
                            r["cpu_per_s"],
                            r["controller_cpu_per_s"],
                            r["connects_ok"],
                            r["connects"],
                            r["connect_echo_p99_ms"],
                        ),
                        flush=True,
                    )
        finally:
            fl.close()
            srv.close()
    summ = summarise(results) if results else None
    print(json.dumps(summ, indent=2))
    with open(os.path.join(args.out, "flood.json"), "w") as f:
        json.dump(
            {
                "machine": os.uname().release,
                "nproc": os.cpu_count(),
                "loadavg_start_end": [load0, os.getloadavg()],
                "live_frames": probe or "allowed",
                "methods": {g: METHODS[g] for g in generators},
                "seconds": args.seconds,
                "controller_idle_cpu_per_s": idle,
                "stepped_method": METHODS["trafgen"],
                "summary": summ,
                "results": results,
                "rounds": {
                    "count": args.count,
                    "rounds": args.rounds,
                    "rexmtbase": args.rexmtbase,
                    "summary": round_sum,
                    "results": round_results,
                },
                "scaling": {"count": args.scaling_count, "results": scale},
            },
            f,
            indent=1,
        )
    if results:
        plot(results, os.path.join(args.out, "flood.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
