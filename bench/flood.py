"""SYN and ACK floods against synguard, kernel syncookies and nftables SYNPROXY,
side by side in one run, in the namespace test bed.

    client ns (real clients) ---- server ns (listener, the defence) ---- attacker ns (trafgen)

The attacker has a link of its own (trafgen's TX ring stalls when other
traffic leaves its namespace), spoofs SYNs from 198.19.0.0/16 with random
ports and ISNs, pinned to CPU 0, at stepped rates up to what one core of
trafgen sends. On a veth the receive path runs on the sender's CPU: native
XDP always (in the NAPI poll the sender schedules), the kernel's paths too
unless RPS moves them; with RPS, trafgen's TX ring stalled at the highest
rate (seen), so every defence shares CPU 0 with the generator here, and
"the highest rate answered in full" compares them on that same budget.
SYN-ACKs come back over the attacker's link, where an XDP program counts
and drops them. For each defence and rate: SYN-ACKs/s
returned, the machine's busy CPU (all cores, /proc/stat) minus that of the
same flood into a server that drops it at once (XDP_DROP: the generator's
own cost), real clients' connect-and-echo (success,
median, p99), and the controller's own CPU. Then an ACK flood with random numbers.

Defences: synguard native XDP and generic XDP (cookies and syncache as
shipped, the reflection limit off: one generator stands for many sources),
kernel syncookies (net.ipv4.tcp_syncookies=2, no XDP), nftables SYNPROXY.

usage: sudo python bench/flood.py [--seconds 5] [--rates 100000,150000,200000,max] [--out docs/bench]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from synguard import netlink
from synguard.lab import netns
from synguard.lab.testbed import SERVER4, EchoServer, Testbed, xdp_stub

PORT = 8080
HZ = os.sysconf("SC_CLK_TCK")
TRAFGEN = """
{
  %(dst_mac)s,  0x02, 0x00, 0x00, 0x00, 0x0a, 0x01,  0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), const16(0x4000), 64, 6, csumip(14, 33),
  198, 19, drnd(2),  198, 18, 10, 2,
  drnd(2), const16(%(port)d), drnd(4), %(ack)s, 0x50, %(flags)s, const16(64240), csumtcp(14, 34), const16(0),
}
"""
SYNPROXY = """
table ip synproxy_bench {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    tcp dport %(port)d tcp flags syn notrack
  }
  chain in {
    type filter hook input priority filter; policy accept;
    tcp dport %(port)d ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}
""" % {"port": PORT}


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
        mac = ", ".join("0x" + b for b in json.loads(r.stdout)[0]["address"].split(":"))
        conf = os.path.join(self.tmp, kind + ".cfg")
        with open(conf, "w") as f:
            f.write(
                TRAFGEN
                % {
                    "port": PORT,
                    "flags": "0x02" if kind == "syn" else "0x10",
                    "dst_mac": mac,
                    "ack": "const32(0)" if kind == "syn" else "drnd(4)",
                }
            )
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
                p.terminate()
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rates", default="100000,150000,200000,max")
    ap.add_argument("--out", default="docs/bench")
    args = ap.parse_args(argv)
    rates = [r if r == "max" else int(r) for r in args.rates.split(",")]
    results = {}
    with Testbed(attacker=True) as bed, tempfile.TemporaryDirectory() as tmp:
        srv = EchoServer(bed, PORT)
        bench = Bench(bed, args.seconds, tmp)
        idle = None
        try:
            for d in ORDER:
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
            srv.close()
    summary = summarise(results)
    print(json.dumps(summary, indent=2))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "flood.json"), "w") as f:
        json.dump(
            {
                "machine": os.uname().release,
                "nproc": os.cpu_count(),
                "seconds": args.seconds,
                "controller_idle_cpu_per_s": idle,
                "summary": summary,
                "results": results,
            },
            f,
            indent=1,
        )
    plot(results, os.path.join(args.out, "flood.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
