"""What a defence does to real clients: ab (a new connection per request)
against nginx, with no flood and under bounded spoofed SYN floods, for
kernel syncookies, synguard at its default settings and synguard with
--ratelimit 0, side by side in one run, interleaved over rounds. Also on
request: no defence, nftables SYNPROXY, and the kernel selftest
xdp_synproxy in front of SYNPROXY (--reference OBJ), and, without a flood,
the CPU time each request cost (cpumeter.py): what a whole handshake
costs the host under each defence.

    client ns    ab 198.18.0.1 ---------.
                                         client veth ===== server veth: nginx 198.18.0.2:8080
    attacker ns  trafgen on a macvlan --'  (XDP_PASS)      (the defence; synguard attaches here)
                 of the client veth
    attacker ns  198.18.10.1 (XDP_DROP) ================== server's 2nd veth 198.18.10.2
                                                           (its route to 198.19.0.0/16)

The floods enter the server on the interface the client uses and synguard
protects, as everything does on a one-NIC server: trafgen runs in the
attacker namespace on a macvlan stacked on the client's veth, so its frames
share the client's wire (synguard's reflection limit is per interface). The
frames carry the client veth's MAC as source, as all frames from one
upstream router do, so synguard's XDP_TX (which swaps the MACs) answers
towards the client side, where the client's kernel drops what is not for
its address. The kernel answers by route and ARP: the client's own address
(198.18.0.1) reaches the client, the other addresses of its /24 stay
unresolved (nobody has them), 198.19.0.0/16 goes to the attacker's own
link, where an XDP program drops it. The client answers each SYN-ACK for
its own address that it did not ask for with an RST, under every defence.

Scenarios, per defence and round: no flood; "foreign" (random sources in
198.19.0.0/16); "own /24" (198.18.0.3-254 in turn: the client's prefix, not
its address); "own address" (198.18.0.1, random ports). The SYNs carry
Linux's options; trafgen sends them at a fixed rate, pinned to CPU 0,
bounded by a count (-n) and by timeout(1). ab starts first; the flood starts
LEAD s later and lasts FLOOD s; ab goes on for TAIL s after it (a connect
whose SYN was dropped retries 1, 3 and 7 s after its first). Requests/s and
connect times are those of the requests ab started during the flood and
completed (ab -g: start second, connect time in ms); failed requests are
ab's for its whole run.

The client's veth sends whole checksums (tx offload off), as frames from a
NIC have them: xdp_synproxy drops a SYN whose sum a veth left partial.

usage: cd bench && sudo ../.venv/bin/python clients.py [--rounds 3] [--quick] [--markdown PATH] [--json PATH]
       [--defences none,kernel,nft-synproxy,xdp-synproxy,synguard --reference OBJ] [--scenarios none]
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import SYNPROXY, ReferenceObjectError, reference, xdp_replace
from cpumeter import Meter, MeterError
from synguard import netlink
from synguard.lab import netns
from synguard.lab.testbed import CLIENT4, SERVER4, Testbed

PROG = "clients.py"
PORT = 8080
URL = "http://%s:%d/" % (SERVER4, PORT)
BODY = "synguard bench\n"

# Tools and the Debian packages that have them.
TOOLS = {
    "ab": "apache2-utils",
    "nginx": "nginx-light",
    "trafgen": "netsniff-ng",
    "ip": "iproute2",
    "taskset": "util-linux",
    "ethtool": "ethtool",
}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

DEFENCES = ("none", "kernel", "nft-synproxy", "xdp-synproxy", "synguard", "synguard-rl0")
DEFAULT_DEFENCES = ("kernel", "synguard", "synguard-rl0")
DEFENCE_NAMES = {
    "none": "no defence (tcp_syncookies=1, never under pressure)",
    "kernel": "kernel syncookies (tcp_syncookies=2)",
    "nft-synproxy": "nftables SYNPROXY",
    "xdp-synproxy": "xdp_synproxy (kernel selftest) + nftables SYNPROXY",
    "synguard": "synguard, default settings",
    "synguard-rl0": "synguard --ratelimit 0",
}
# Source address bytes (trafgen) and a description, per flood.
SCENARIOS = {
    "none": None,
    "foreign": ("198, 19, drnd(2)", "random sources in 198.19.0.0/16"),
    "own-24": ("198, 18, 0, dinc(3, 254)", "198.18.0.3-254 in turn (the client's /24)"),
    "own-addr": ("198, 18, 0, 1", "198.18.0.1 (the client's address), random ports"),
}
SCENARIO_NAMES = {"none": "no flood", "foreign": "foreign", "own-24": "own /24", "own-addr": "own address"}

NGINX_CONF = """
worker_processes 1;
pid %(dir)s/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path %(dir)s/body;
    server {
        listen %(addr)s:%(port)d;
        location / { return 200 "%(body)s"; }
    }
}
"""
# A SYN with Linux's options (MSS 1460, SACK-permitted, timestamps, NOP,
# wscale 7), random ports, IP ID, ISN and TSval.
TRAFGEN_SYN = """
{
  %(dst_mac)s,  %(src_mac)s,  0x08, 0x00,
  0x45, 0x00, const16(60), drnd(2), const16(0x4000), 64, 6, csumip(14, 33),
  %(src)s,  198, 18, 0, 2,
  drnd(2), const16(%(port)d), drnd(4), const32(0), 0xa0, 0x02, const16(64240), csumtcp(14, 34), const16(0),
  0x02, 0x04, 0x05, 0xb4,  0x04, 0x02, 0x08, 0x0a,  drnd(4), const32(0),  0x01, 0x03, 0x03, 0x07,
}
"""
SG_COUNTERS = (
    "ratelimited",
    "sendcookie",
    "added",
    "dupsyn",
    "reset",
    "established",
    "completed",
    "recvcookie",
    "expanded",
    "coalesced",
    "raced",
    "aborted",
    "badcookie",
    "rstsent",
    "rstheld",
    "verified",
)
KERNEL_COUNTERS = (
    ("TcpExt", "SyncookiesSent"),
    ("TcpExt", "SyncookiesRecv"),
    ("TcpExt", "SyncookiesFailed"),
    ("TcpExt", "ListenDrops"),
    ("Tcp", "OutRsts"),
    ("Tcp", "PassiveOpens"),
)


class Fail(Exception):
    """An expected failure: one line, no traceback."""


# --- tools -------------------------------------------------------------------


def which(tool):
    return shutil.which(tool, path=SBIN_PATH)


def ensure_tools():
    """Install the Debian packages of missing tools (a fresh CI machine)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not which(tool)})
    if not missing:
        return
    if not which("apt-get"):
        raise Fail("missing %s and no apt-get to install them" % ", ".join(missing))
    print("installing %s" % " ".join(missing), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
    ):
        r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
            raise Fail("%s failed: %s" % (" ".join(argv[:2]), last))
    still = [tool for tool in TOOLS if not which(tool)]
    if still:
        raise Fail("still missing after apt-get install: %s" % ", ".join(still))


def versions():
    def first_line(argv, stream="stdout"):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        out = (r.stdout if stream == "stdout" else r.stderr).strip().splitlines()
        return out[0] if out else "?"

    def deb(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        return r.stdout.strip() or "?"

    return {
        "ab": "ApacheBench 2.3 (apache2-utils %s)" % deb("apache2-utils"),
        "nginx": "%s (nginx-light %s)"
        % (first_line([which("nginx"), "-v"], "stderr").split(": ")[-1], deb("nginx-light")),
        "trafgen": "%s (netsniff-ng %s)" % (first_line([which("trafgen"), "--version"]), deb("netsniff-ng")),
        "kernel": os.uname().release,
    }


# --- the bed -----------------------------------------------------------------


def mac_bytes(mac):
    return ", ".join("0x" + b for b in mac.split(":"))


class Bench:
    def __init__(self, bed, tmp, args, meter, ref_fd=None):
        """meter: a cpumeter.Meter for nginx, ab and synguard's daemon;
        ref_fd: xdp_synproxy's XDP program (common.reference)."""
        self.bed, self.tmp, self.args = bed, tmp, args
        self.meter, self.ref_fd = meter, ref_fd
        self.nginx = None
        self.controller = None
        self.macvlan = "sgm" + bed.client_if[2:8]
        self.procs = []  # process groups to end on the way out

    def up(self):
        bed = self.bed
        for name, value in (
            ("net.ipv4.tcp_max_tw_buckets", 0),  # the server closes first: no TIME_WAIT limit
            ("net.ipv4.conf.all.rp_filter", 0),  # 198.19.0.0/16 routes via the attacker link
            ("net.ipv4.conf.default.rp_filter", 0),
            ("net.ipv4.conf.%s.rp_filter" % bed.server_if, 0),
            ("net.ipv4.tcp_syncookies", 1),
        ):
            bed.sysctl(bed.server_ns, name, value)
        bed.sysctl(bed.client_ns, "net.ipv4.ip_local_port_range", "1024 65535")  # ports come round later
        # Whole checksums on the client's frames, as from a NIC: xdp_synproxy
        # checks a SYN's and drops it when a veth leaves the sum partial.
        argv = [which("ethtool"), "-K", bed.client_if, "tx", "off"]
        r = netns.run(bed.client_ns, argv, capture_output=True, text=True)
        if r.returncode:
            raise Fail("ethtool -K %s tx off: %s" % (bed.client_if, r.stderr.strip()))
        # The attacker's way onto the client's wire.
        self.ip(bed.client_ns, "link", "add", "link", bed.client_if, "name", self.macvlan, "type", "macvlan")
        self.ip(bed.client_ns, "link", "set", self.macvlan, "netns", bed.attacker_ns)
        self.ip(bed.attacker_ns, "link", "set", self.macvlan, "up")
        server_mac = netns.link_attr(bed.server_ns, bed.server_if, "IFLA_ADDRESS")
        client_mac = netns.link_attr(bed.client_ns, bed.client_if, "IFLA_ADDRESS")
        self.confs = {}
        for scenario, spec in SCENARIOS.items():
            if spec is None:
                continue
            path = os.path.join(self.tmp, "%s.cfg" % scenario)
            with open(path, "w") as f:
                f.write(
                    TRAFGEN_SYN
                    % {
                        "dst_mac": mac_bytes(server_mac),
                        "src_mac": mac_bytes(client_mac),
                        "src": spec[0],
                        "port": PORT,
                    }
                )
            self.confs[scenario] = path
        self.start_nginx()

    def ip(self, ns, *argv):
        r = netns.run(ns, ["ip"] + list(argv), capture_output=True, text=True)
        if r.returncode:
            raise Fail("ip %s: %s" % (" ".join(argv), r.stderr.strip()))

    def popen(self, ns, argv, **kw):
        """A process in its own group (nginx's workers, trafgen under
        timeout), ended with its whole group by close()."""
        p = netns.popen(ns, argv, start_new_session=True, **kw)
        self.procs = [q for q in self.procs if q.poll() is None] + [p]
        return p

    def start_nginx(self):
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                NGINX_CONF % {"dir": self.tmp, "addr": SERVER4, "port": PORT, "body": BODY.strip() + "\\n"}
            )
        os.makedirs(os.path.join(self.tmp, "body"), exist_ok=True)
        argv = [which("nginx"), "-p", self.tmp, "-c", conf, "-e", os.path.join(self.tmp, "error.log")]
        r = netns.run(self.bed.server_ns, argv + ["-t", "-q"], capture_output=True, text=True)
        if r.returncode:
            raise Fail("nginx -t: %s" % (r.stderr.strip().splitlines() or ["?"])[-1])
        self.nginx = self.popen(
            self.bed.server_ns,
            argv + ["-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                r = self.bed.connect(SERVER4, PORT, payload=b"", timeout=1)
                if r:
                    self.meter.add(self.nginx.pid)
                    with open("/proc/%d/task/%d/children" % (self.nginx.pid, self.nginx.pid)) as f:
                        for worker in f.read().split():
                            self.meter.add(int(worker))
                    return
            except OSError:
                if self.nginx.poll() is not None:
                    raise Fail("nginx exited: %s" % self.nginx.stderr.read().strip()) from None
                time.sleep(0.1)
        raise Fail("nginx does not answer on %s" % URL)

    def close(self):
        """End what still runs, each with its process group (nginx's master
        takes its workers along on SIGTERM), while its pid is not yet
        reaped and so cannot name anyone else's group."""
        self.detach()
        for p in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if p.poll() is not None:
                    break
                try:
                    os.killpg(p.pid, sig)
                    p.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        self.procs = []

    # --- defences ----------------------------------------------------------

    def defend(self, defence):
        bed = self.bed
        if defence not in ("synguard", "synguard-rl0"):
            r = netns.run(
                bed.server_ns, ["ip", "-j", "link", "show", bed.server_if], capture_output=True, text=True
            )
            if "xdp" in json.loads(r.stdout)[0]:
                raise Fail("an XDP program is still on %s before %s" % (bed.server_if, defence))
        if defence == "none":
            pass  # tcp_syncookies=1 (up): the kernel's plain handshake without a full queue
        elif defence == "kernel":
            bed.sysctl(bed.server_ns, "net.ipv4.tcp_syncookies", 2)
        elif defence in ("nft-synproxy", "xdp-synproxy"):
            # as the SYNPROXY documentation and xdp_synproxy's own set them
            netns.run(bed.server_ns, ["nft", "-f", "-"], input=SYNPROXY, text=True, check=True)
            bed.sysctl(bed.server_ns, "net.netfilter.nf_conntrack_tcp_loose", 0)
            # ab comes back to a port within seconds; its untracked SYN meets
            # the last connection's conntrack entry in TIME_WAIT, which makes
            # the ACK invalid, and SYNPROXY drops it (ab then stalls). Entries
            # that end before ab's ports come round measure the defence.
            bed.sysctl(bed.server_ns, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", 1)
            if defence == "xdp-synproxy":
                xdp_replace(bed.server_ns, bed.server_if, self.ref_fd)
        elif defence == "synguard":
            self.controller = bed.attach([PORT])  # the port alone: everything else as shipped
        elif defence == "synguard-rl0":
            self.controller = bed.attach([PORT], "--ratelimit", "0")
        else:
            raise ValueError(defence)
        if self.controller is not None:
            self.meter.add(self.controller.pid)

    def detach(self, defence=None):
        bed = self.bed
        if self.controller is not None:
            self.controller.send_signal(signal.SIGQUIT)  # stop now: no drain between rows
            try:
                self.controller.wait(30)
            except subprocess.TimeoutExpired:
                self.controller.kill()
                self.controller.wait()
            self.controller = None
        if defence == "xdp-synproxy":
            with netns.netns(bed.server_ns):
                netlink.xdp_detach(netlink.ifindex(bed.server_if), "native")
        if defence in ("nft-synproxy", "xdp-synproxy"):
            netns.run(bed.server_ns, ["nft", "delete", "table", "ip", "synproxy_bench"], check=True)
            bed.sysctl(bed.server_ns, "net.netfilter.nf_conntrack_tcp_loose", 1)
            bed.sysctl(bed.server_ns, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", 120)
        if defence in ("kernel", "nft-synproxy", "xdp-synproxy"):
            bed.sysctl(bed.server_ns, "net.ipv4.tcp_syncookies", 1)

    def synguard_counters(self):
        if self.controller is None:
            return None
        r = self.bed.synguard_run("status", self.bed.server_if, "--json")
        if r.returncode:
            raise Fail("synguard status: %s" % r.stderr.strip())
        return json.loads(r.stdout)["counters"]

    def kernel_counters(self, ns):
        """{Group.Name: value} of /proc/net/snmp and /proc/net/netstat in ns."""
        out = {}
        with netns.netns(ns):
            for name in ("snmp", "netstat"):
                with open("/proc/thread-self/net/" + name) as f:
                    lines = f.read().splitlines()
                for head, values in zip(lines[::2], lines[1::2]):
                    group, keys = head.split(":", 1)
                    for k, v in zip(keys.split(), values.split(":", 1)[1].split()):
                        out["%s.%s" % (group, k)] = int(v)
        return out

    def tx_packets(self):
        r = netns.run(
            self.bed.attacker_ns,
            ["ip", "-s", "-j", "link", "show", self.macvlan],
            capture_output=True,
            text=True,
            check=True,
        )
        st = json.loads(r.stdout)[0]["stats64"]["tx"]
        return st["packets"], st["dropped"]

    # --- one measurement ---------------------------------------------------

    def flood(self, scenario):
        """trafgen, bounded in packets (-n) and seconds (timeout: SIGINT a
        second after the flood's time, SIGKILL 2 s later), pinned to CPU 0;
        returns its Popen."""
        a = self.args
        count = int(a.rate * a.flood)
        argv = ["timeout", "-s", "INT", "-k", "2", str(a.flood + 1), which("taskset"), "-c", "0"]
        argv += [which("trafgen")]
        argv += ["--dev", self.macvlan, "--conf", self.confs[scenario], "-P", "1", "-n", str(count)]
        # Leave the socket memory sysctls and IRQ affinities alone (a killed
        # trafgen would not set them back).
        argv += ["-b", "%dpps" % a.rate, "--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]
        return self.popen(
            self.bed.attacker_ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def cell(self, defence, scenario, not_before):
        """One measurement; ab starts on the first whole second at or after
        not_before (monotonic)."""
        a = self.args
        gnuplot = os.path.join(self.tmp, "ab.tsv")
        if os.path.exists(gnuplot):
            os.unlink(gnuplot)
        sg0 = self.synguard_counters()
        srv0, cli0 = self.kernel_counters(self.bed.server_ns), self.kernel_counters(self.bed.client_ns)
        total = a.lead + a.flood + a.tail
        # -t before -n: ab stops at the time limit, -n only sizes its table.
        argv = ["ab", "-r", "-s", str(a.ab_timeout), "-t", str(total), "-n", "1000000"]
        argv += ["-c", str(a.concurrency), "-g", gnuplot, URL]
        # Start on a whole second: ab's -g records the start second only.
        time.sleep(max(0.0, not_before - time.monotonic()))
        time.sleep(math.ceil(time.time()) - time.time())
        t0 = int(round(time.time()))
        cpu0 = self.meter.read()
        ab = self.popen(self.bed.client_ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.meter.add(ab.pid)
        flood = None
        time.sleep(max(0.0, t0 + a.lead - time.time()))
        tx0 = self.tx_packets()
        f0 = time.monotonic()
        if SCENARIOS[scenario]:
            flood = self.flood(scenario)
            err = flood.communicate(timeout=a.flood + 10)[1]
            if flood.returncode not in (0, 124, 137):  # done, stopped by timeout, killed by it
                raise Fail("trafgen exited %d: %s" % (flood.returncode, err.strip()[-300:]))
        flood_s = time.monotonic() - f0
        tx1 = self.tx_packets()
        try:
            out, err = ab.communicate(timeout=total + a.ab_timeout + 30)
        except subprocess.TimeoutExpired:
            ab.kill()
            out, err = ab.communicate()
        cpu_s = self.meter.read() - cpu0
        sg1 = self.synguard_counters()
        srv1, cli1 = self.kernel_counters(self.bed.server_ns), self.kernel_counters(self.bed.client_ns)
        row = {
            "defence": defence,
            "scenario": scenario,
            "ab_exit": ab.returncode,
        }
        row.update(parse_ab(out, err))
        # without a flood, all of ab's run is one defence's real connections
        row["cpu_us"] = cpu_s * 1e6 / row["complete"] if row["complete"] and not flood else None
        row.update(window(gnuplot, t0 + a.lead, a.flood))
        row["per_second"] = per_second(gnuplot, t0, total)
        row["flood"] = (
            {
                "sent": tx1[0] - tx0[0],
                "tx_dropped": tx1[1] - tx0[1],
                "seconds": round(flood_s, 3),
                "rate": round((tx1[0] - tx0[0]) / flood_s),
            }
            if flood
            else None
        )
        row["synguard"] = {k: sg1[k] - sg0[k] for k in SG_COUNTERS if k in sg0 and k in sg1} if sg0 else None
        row["server"] = {"%s.%s" % k: srv1["%s.%s" % k] - srv0["%s.%s" % k] for k in KERNEL_COUNTERS}
        row["client_out_rsts"] = cli1["Tcp.OutRsts"] - cli0["Tcp.OutRsts"]
        # Frames for addresses the client does not have (it does not forward).
        row["client_in_addr_errors"] = cli1["Ip.InAddrErrors"] - cli0["Ip.InAddrErrors"]
        return row


def parse_ab(out, err):
    """What ab printed: its totals, or that it aborted and why."""
    r = {"aborted": None, "complete": None, "failed": None, "non_2xx": 0, "ab_rps": None}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Complete requests":
            r["complete"] = int(value)
        elif key == "Failed requests":
            r["failed"] = int(value.split()[0])
        elif key.strip().startswith("(Connect") and "Exceptions" in line:
            r["failed_kinds"] = line.strip().strip("()")  # "Connect: 0, Receive: 0, Length: 3, ..."
        elif key == "Non-2xx responses":
            r["non_2xx"] = int(value)
        elif key == "Requests per second":
            r["ab_rps"] = float(value.split()[0])
        elif key.startswith("Total of ") and "requests completed" in line:
            r["complete"] = int(line.split()[2])
    for line in err.splitlines():
        if line.startswith("Total of ") and "requests completed" in line:
            r["complete"] = int(line.split()[2])
    if r["ab_rps"] is None:
        errors = [x for x in err.splitlines() if x.strip() and "Completed" not in x and "Finished" not in x]
        r["aborted"] = (errors or ["no output"])[-1].strip()
    return r


def per_second(gnuplot, t0, seconds):
    """Requests ab started in each second of its run (and completed), with
    the largest connect time (ms) among them: [[count, max connect], ...]."""
    bins = [[0, 0] for _ in range(seconds + 1)]
    try:
        with open(gnuplot) as f:
            next(f, None)
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) >= 6 and 0 <= int(cols[1]) - t0 <= seconds:
                    b = bins[int(cols[1]) - t0]
                    b[0] += 1
                    b[1] = max(b[1], int(cols[2]))
    except OSError:
        pass
    return bins


def window(gnuplot, start, seconds):
    """From ab -g: the requests ab started in [start, start+seconds) (epoch
    seconds) and completed: how many per second, their connect times (ms)."""
    ctimes = []
    try:
        with open(gnuplot) as f:
            next(f, None)
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) >= 6 and start <= int(cols[1]) < start + seconds:
                    ctimes.append(int(cols[2]))
    except OSError:
        pass  # ab aborted before writing it
    ctimes.sort()
    return {
        "window_requests": len(ctimes),
        "rps": round(len(ctimes) / seconds, 1),
        "connect_median_ms": statistics.median(ctimes) if ctimes else None,
        "connect_p99_ms": ctimes[min(len(ctimes) - 1, math.ceil(0.99 * len(ctimes)) - 1)] if ctimes else None,
        "connect_max_ms": ctimes[-1] if ctimes else None,
    }


# --- rounds and the table ------------------------------------------------------


def run_rounds(bench, rounds, defences, scenarios):
    rows = []
    for rnd in range(rounds):
        for d in defences:
            bench.defend(d)
            try:
                for s in scenarios:
                    row = bench.cell(d, s, time.monotonic() + bench.args.gap)
                    row["round"] = rnd
                    rows.append(row)
                    print(line(row), flush=True)
            finally:
                bench.detach(d)
    return rows


def line(row):
    fl = row["flood"]
    sg = row["synguard"]
    return "round %d %-13s %-9s %8.1f req/s (ab %s) failed %s%s connect %s/%s ms%s%s%s%s" % (
        row["round"],
        row["defence"],
        row["scenario"],
        row["rps"],
        row["ab_rps"],
        row["failed"],
        " ABORTED: %s" % row["aborted"] if row["aborted"] else "",
        row["connect_median_ms"],
        row["connect_p99_ms"],
        " | flood %d SYNs %.1fs %d/s%s"
        % (
            fl["sent"],
            fl["seconds"],
            fl["rate"],
            " (%d retried)" % fl["tx_dropped"] if fl["tx_dropped"] else "",
        )
        if fl
        else "",
        " | synguard %s" % " ".join("%s %d" % kv for kv in sg.items() if kv[1]) if sg else "",
        " | client RSTs %d" % row["client_out_rsts"] if row["client_out_rsts"] else "",
        " | CPU %.1f us/request" % row["cpu_us"] if row["cpu_us"] else "",
    )


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(rows, defences, scenarios):
    out = []
    for s in scenarios:
        for d in defences:
            mine = [r for r in rows if r["defence"] == d and r["scenario"] == s]
            if not mine:
                continue
            out.append(
                {
                    "scenario": s,
                    "defence": d,
                    "rounds": len(mine),
                    "rps": med([r["rps"] for r in mine]),
                    "rps_range": [min(r["rps"] for r in mine), max(r["rps"] for r in mine)],
                    "failed": sum((r["failed"] or 0) + (r["non_2xx"] or 0) for r in mine),
                    "aborted": sum(1 for r in mine if r["aborted"]),
                    "connect_median_ms": med([r["connect_median_ms"] for r in mine]),
                    "connect_p99_ms": med([r["connect_p99_ms"] for r in mine]),
                    "connect_max_ms": max(
                        (r["connect_max_ms"] for r in mine if r["connect_max_ms"] is not None), default=None
                    ),
                    "ratelimited": med([r["synguard"].get("ratelimited") for r in mine if r["synguard"]]),
                    "flood_rate": med([r["flood"]["rate"] for r in mine if r["flood"]]),
                    "flood_sent": med([r["flood"]["sent"] for r in mine if r["flood"]]),
                    "client_out_rsts": med([r["client_out_rsts"] for r in mine]),
                    "cpu_us": med([r["cpu_us"] for r in mine]),
                }
            )
    return out


def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def markdown(summary, meta):
    a = meta["args"]
    lines = [
        "Real clients against nginx, %d interleaved round(s) (medians; requests/s range in brackets). "
        "ab -c %d, a new connection per request, for %d s; the flood starts %d s in and lasts %d s "
        "at %s SYNs/s offered; requests/s and connect times are those of the requests ab started "
        "during the flood (ab -g, 1 ms resolution); failed: ab's failed + non-2xx over all rounds, "
        "whole runs; aborted: rounds where ab gave up. CPU per request (no flood only): the CPU time "
        "charged to ab, nginx and synguard's daemon (where it runs) and to ksoftirqd during ab's run, "
        "over the requests completed; the receive path of a veth runs in the sender's context, so it "
        "includes each defence's packet work."
        % (
            a["rounds"],
            a["concurrency"],
            a["lead"] + a["flood"] + a["tail"],
            a["lead"],
            a["flood"],
            f"{a['rate']:,}",
        ),
        "",
        "| flood | defence | requests/s | failed | aborted | connect median | connect p99 | connect max "
        "| `ratelimited` | flood SYNs/s achieved | client RSTs | CPU per request |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            "| %s | %s | %s (%s-%s) | %d | %d | %s ms | %s ms | %s ms | %s | %s | %s | %s |"
            % (
                SCENARIO_NAMES[r["scenario"]],
                DEFENCE_NAMES[r["defence"]],
                f"{r['rps']:,.0f}",
                f"{r['rps_range'][0]:,.0f}",
                f"{r['rps_range'][1]:,.0f}",
                r["failed"],
                r["aborted"],
                fmt(r["connect_median_ms"]),
                fmt(r["connect_p99_ms"]),
                fmt(r["connect_max_ms"]),
                fmt(r["ratelimited"]) if r["defence"].startswith("synguard") else "-",
                f"{r['flood_rate']:,.0f}" if r["flood_rate"] else "-",
                fmt(r["client_out_rsts"]),
                fmt(r["cpu_us"], "%.1f us"),
            )
        )
    lines += [
        "",
        "Method: %s; %s; %s; Linux %s. %s. Run %s of synguard %s, %.0f s, load average %s before, %s after."
        % (
            meta["versions"]["ab"],
            meta["versions"]["nginx"],
            meta["versions"]["trafgen"],
            meta["versions"]["kernel"],
            "; ".join(
                "%s: %s" % (SCENARIO_NAMES[s], SCENARIOS[s][1]) for s in a["scenarios"] if SCENARIOS[s]
            ),
            meta["started"],
            meta["code"] or "(version unknown)",
            meta["seconds"],
            meta["loadavg"],
            meta["loadavg_after"],
        ),
        "",
    ]
    if meta["irq_time_accounting"] is not False:
        lines[-1:-1] = [
            "This kernel charges softirq time to no task (CONFIG_IRQ_TIME_ACCOUNTING=y, or its config "
            "unreadable): CPU per request leaves out the packet work done in softirq.",
            "",
        ]
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="one round with shorter floods (a smoke run)")
    ap.add_argument(
        "--rate", type=int, default=50_000, help="SYNs per second each flood offers (default 50000)"
    )
    ap.add_argument("--flood", type=int, default=5, help="seconds each flood lasts (default 5)")
    ap.add_argument("--lead", type=int, default=1, help="seconds of client load before the flood (default 1)")
    ap.add_argument("--tail", type=int, default=2, help="seconds of client load after the flood (default 2)")
    ap.add_argument("--gap", type=float, default=0.0, help="least seconds between measurements (default 0)")
    ap.add_argument("--concurrency", type=int, default=20, help="ab -c (default 20)")
    ap.add_argument(
        "--ab-timeout",
        type=int,
        default=30,
        help="ab -s: seconds without progress before it gives up (default 30)",
    )
    ap.add_argument(
        "--defences",
        default=",".join(DEFAULT_DEFENCES),
        help="of %s (default %s)" % (", ".join(DEFENCES), ",".join(DEFAULT_DEFENCES)),
    )
    ap.add_argument(
        "--reference",
        metavar="OBJ",
        help="xdp_synproxy_kern.bpf.o (docs/BENCHMARKS.md says how it is built), for --defences xdp-synproxy",
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="of %s" % ", ".join(SCENARIOS))
    ap.add_argument("--markdown", metavar="PATH", help="write the table there")
    ap.add_argument("--json", metavar="PATH", help="write every round's raw figures there")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.flood, args.tail = 1, 3, 1
    for name in ("rounds", "rate", "flood", "lead", "concurrency"):
        if getattr(args, name) < 1:
            ap.error("--%s must be at least 1" % name)
    if args.tail < 0 or args.gap < 0 or args.ab_timeout < 1:
        ap.error("--tail and --gap must not be negative, --ab-timeout at least 1")
    if args.rate * args.flood > 10_000_000:
        ap.error("--rate x --flood is over 10,000,000 SYNs: keep floods bounded")
    for name, known in (("defences", DEFENCES), ("scenarios", SCENARIOS)):
        chosen = [x for x in getattr(args, name).split(",") if x]
        bad = [x for x in chosen if x not in known]
        if bad or not chosen:
            ap.error("--%s: unknown %s (known: %s)" % (name, ",".join(bad) or "(none)", ", ".join(known)))
        setattr(args, name, chosen)
    if "xdp-synproxy" in args.defences and not args.reference:
        ap.error("--defences xdp-synproxy needs --reference OBJ")
    if args.reference and not os.path.isfile(args.reference):
        ap.error("--reference %s: no such file" % args.reference)
    return args


def code_version():
    """The last commit to the synguard being measured (controller/ and bpf/
    of its source tree), with "+changes" when the tree differs from it;
    None outside git."""
    import synguard

    src = os.path.dirname(os.path.abspath(synguard.__file__))
    try:
        head = subprocess.run(
            ["git", "-C", src, "log", "-1", "--format=%h", "--", "../controller", "../bpf"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", src, "status", "--porcelain", "--", "../controller", "../bpf"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode or not head.stdout.strip():
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("%s: error: needs root (namespaces, XDP, bpffs)" % PROG, file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C: the namespaces and processes go either way.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with open("/proc/loadavg") as f:
        loadavg = " ".join(f.read().split()[:3])
    t0 = time.monotonic()
    try:
        ensure_tools()
        vers = versions()
        with tempfile.TemporaryDirectory(prefix="sg-clients-") as tmp:
            os.chmod(tmp, 0o755)  # nginx's workers (nobody) read nothing there, but may stat it
            with (
                Testbed(attacker=True) as bed,
                Meter() as meter,
                contextlib.ExitStack() as stack,
            ):
                ref_fd = stack.enter_context(reference(args.reference)) if args.reference else None
                bench = Bench(bed, tmp, args, meter, ref_fd)
                irq_time_accounting = meter.irq_time_accounting
                try:
                    bench.up()
                    rows = run_rounds(bench, args.rounds, args.defences, args.scenarios)
                finally:
                    bench.close()
    except ReferenceObjectError as e:  # bad input: --reference
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 2
    except (Fail, MeterError) as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted; namespaces removed" % PROG, file=sys.stderr)
        return 130
    summary = summarise(rows, args.defences, args.scenarios)
    with open("/proc/loadavg") as f:
        loadavg_after = " ".join(f.read().split()[:3])
    meta = {
        "started": started,
        "seconds": time.monotonic() - t0,
        "loadavg": loadavg,
        "loadavg_after": loadavg_after,
        "code": code_version(),
        "nproc": os.cpu_count(),
        "versions": vers,
        "client": CLIENT4,
        "url": URL,
        "args": {k: v for k, v in vars(args).items() if k not in ("markdown", "json")},
        "irq_time_accounting": irq_time_accounting,
    }
    text = markdown(summary, meta)
    print()
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "summary": summary, "rounds": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
