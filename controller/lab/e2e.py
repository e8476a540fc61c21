"""End-to-end suite: synguard on a server between a real client and an attacker.

Three hosts on one LAN, given to the suite as shell access:

    client ----+---- server (synguard attached in native mode, a real listener)
               |
    attacker --'     (trafgen: bounded floods of spoofed SYNs and bogus ACKs)

  --hosts netns        three network namespaces on this machine joined by a
                       bridge in a fourth (what CI runs); made and removed here
  --hosts ssh          any three machines reachable over SSH, e.g. the Vagrant
                       VMs: --ssh-config "$(vagrant ssh-config)" output, hosts
                       named server, client and attacker (vagrant/e2e.sh)

The scenarios are the same for both. An established connection opened before
attach echoes every 100 ms until the end; then: connects before attach, attach,
a SYN flood and a bogus-ACK flood with real connects throughout, /metrics,
a kill -9 of the controller with connects while it is down and the restart
that adopts the data path, and the stop that detaches it. Each step checks
what a user would: every real connect succeeds, the flood is answered (SYN)
or dropped (ACK) in XDP, nothing breaks the established connection, the
interface is clean after the stop. Prints a verdict with the figures.

Only stdlib here: the machine that drives the VMs needs no bcc (the netns
hosts import the test bed, which does).

usage: python -m synguard.e2e [--hosts netns|ssh] [--rate 20000] [--seconds 5] [--json FILE]
examples:
  sudo .venv/bin/python -m synguard.e2e                       # namespaces here
  python3 controller/e2e.py --hosts ssh --ssh-config vagrant/.ssh-config
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

PORT = 8080
SPOOF_NET4 = "198.19.0.0/16"  # the attacker's spoofed sources (RFC 2544 range)
METRICS = "127.0.0.1:9717"
ATTACH_TIMEOUT = 300
ROTATE_SECONDS = 4  # synguard's cookies: key rotation, so a drain of 8 s at most
KFUNC = "bpf_sk_assign_tcp_reqsk"  # datapath.KFUNC (this file also runs without the package)
RSTLIMIT = 10000  # synguard's default RST budget a second (settings: rstlimit)

# Run on the server: a dual-stack echo listener, one thread per connection.
LISTENER = r"""
import socket, sys, threading
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(4096)
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

# Run on the client. "connects HOST PORT SECONDS": new connections one after
# the other (100 bytes echoed, 50 ms apart) for SECONDS. "hold HOST PORT 0":
# one connection echoing 64 bytes every 100 ms until SIGTERM. Prints JSON.
CLIENT = r"""
import json, signal, socket, sys, time
mode, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def echo(s, msg):
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got == msg
end = time.monotonic() + seconds
if mode == "connects":
    ok, total, times = 0, 0, []
    while time.monotonic() < end:
        total += 1
        try:
            t0 = time.monotonic()
            with socket.create_connection((host, port), timeout=3) as s:
                t = time.monotonic() - t0
                s.settimeout(3)
                if echo(s, b"q" * 100):
                    ok += 1
                    times.append(t * 1000)
        except OSError:
            pass
        time.sleep(0.05)
    times.sort()
    print(json.dumps({"ok": ok, "total": total,
                      "median_ms": times[len(times) // 2] if times else None,
                      "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] if times else None}))
else:
    # Until SIGTERM; a stalled or reset connection ends it with the error.
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    echoes, error = 0, None
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.settimeout(3)
            while not stop:
                if not echo(s, b"e" * 64):
                    error = "short echo"
                    break
                echoes += 1
                time.sleep(0.1)
    except OSError as e:
        error = "%s after %d echoes" % (e, echoes)
    print(json.dumps({"echoes": echoes, "error": error}))
"""

# Run on the attacker: trafgen frames to the server's MAC from random
# sources in SPOOF_NET4; SYNs, or ACKs with random sequence and ack numbers.
TRAFGEN = """
{
  %(dst_mac)s,  %(src_mac)s,  0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), const16(0x4000), 64, 6, csumip(14, 33),
  198, 19, drnd(2),  %(dst_ip)s,
  drnd(2), const16(%(port)d), drnd(4), %(ack)s, 0x50, %(flags)s, const16(64240), csumtcp(14, 34), const16(0),
}
"""


class Host:
    """Root shell access to one host: sh(script) runs `sh -c script` there.
    prefix is the argv that runs a shell command string on the host; over
    SSH the remote shell splits the command again, hence remote=True."""

    def __init__(self, name, prefix, synguard, python="python3", remote=False):
        self.name, self.prefix, self.remote = name, prefix, remote
        self.synguard = synguard  # how to invoke the CLI there
        self.python = python

    def sh(self, script, input=None, timeout=120, check=True):
        argv = self.prefix + [shlex.quote(script) if self.remote else script]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(
                "%s: `%s` failed (%d): %s" % (self.name, script, r.returncode, r.stderr.strip())
            )
        return r

    def put(self, path, text):
        self.sh("mkdir -p %s && cat > %s" % (os.path.dirname(path), path), input=text)

    def spawn(self, command, log):
        """Start command in the background (its own session); returns its pid."""
        r = self.sh("setsid %s >%s 2>&1 </dev/null & echo $!" % (command, log))
        return int(r.stdout.split()[-1])

    def json(self, script):
        return json.loads(self.sh(script).stdout)

    def iface_to(self, addr):
        """The interface this host reaches addr through."""
        return self.json("ip -j route get %s" % addr)[0]["dev"]

    def mac(self, ifname):
        return self.json("ip -j link show %s" % ifname)[0]["address"]

    def link_packets(self, ifname):
        s = self.json("ip -s -j link show %s" % ifname)[0]["stats64"]
        return s["tx"]["packets"], s["rx"]["packets"]

    def tx_dropped(self, ifname):
        """Frames the interface dropped on the way out (generic XDP_TX
        counts a full TX queue's here)."""
        return self.json("ip -s -j link show %s" % ifname)[0]["stats64"]["tx"]["dropped"]


def ssh_hosts(config, synguard="synguard"):
    """server, client, attacker as named in an ssh_config (vagrant ssh-config)."""
    return [
        Host(
            name,
            ["ssh", "-F", config, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", name, "sudo", "sh", "-c"],
            synguard,
            remote=True,
        )
        for name in ("server", "client", "attacker")
    ]


class Step:
    def __init__(self, name):
        self.name, self.checks, self.figures = name, [], {}

    def check(self, ok, what):
        self.checks.append((bool(ok), what))

    @property
    def ok(self):
        return all(ok for ok, _ in self.checks)


class Suite:
    def __init__(
        self,
        server,
        client,
        attacker,
        server_ip,
        rate,
        seconds,
        out=sys.stdout,
        cookies="auto",
        xdp_mode="native",
        server_if=None,
    ):
        self.server, self.client, self.attacker = server, client, attacker
        self.server_ip, self.rate, self.seconds = server_ip, rate, seconds
        self.cookies = cookies
        self.xdp_mode = xdp_mode  # attach --mode: native, generic or auto
        self.server_if = server_if  # None: the one the server reaches the client through
        self.out = out
        self.steps = []
        self.pids = []  # (host, pid) to kill at the end
        self.controller = None
        # Not the secrets module: run as a file, this directory's secrets.py
        # (synguard's) would shadow it.
        self.workdir = "/tmp/synguard-e2e-" + os.urandom(3).hex()
        self.logs = 0

    # --- helpers ----------------------------------------------------------

    def say(self, text):
        print(text, file=self.out, flush=True)

    def log(self, name):
        """A fresh log file path in the work directory."""
        self.logs += 1
        return "%s/%d-%s" % (self.workdir, self.logs, name)

    def step(self, name):
        s = Step(name)
        self.steps.append(s)
        return s

    def connects(self, seconds):
        """Client: start the connect loop in the background; join() for its JSON."""
        log = self.log("connects.json")
        pid = self.client.spawn(
            "%s %s/client.py connects %s %d %s"
            % (self.client.python, self.workdir, self.server_ip, PORT, seconds),
            log,
        )

        def join():
            deadline = time.monotonic() + seconds + 30
            while time.monotonic() < deadline:
                if self.client.sh("kill -0 %d" % pid, check=False).returncode != 0:
                    return json.loads(self.client.sh("cat %s" % log).stdout)
                time.sleep(0.2)
            raise RuntimeError("client connect loop did not finish")

        return join

    def counters(self):
        return self.server.json("%s status %s --json" % (self.server.synguard, self.server_if))["counters"]

    def server_cookies(self):
        """The cookie mode attach will take on the server: --cookies auto
        takes synguard's where the server's kernel has the hand-off's kfunc
        (datapath.cookie_mode reads its BTF; a remote server's is read here
        through /proc/kallsyms, which lists it the same)."""
        if self.cookies != "auto":
            return self.cookies
        found = self.server.sh("grep -qw %s /proc/kallsyms" % KFUNC, check=False).returncode == 0
        return "synguard" if found else "kernel"

    def attach(self):
        path = self.log("attach.log")
        self.controller = self.server.spawn(
            "%s attach %s --ports %d --mode %s --metrics-addr %s --cookies %s%s"
            % (
                self.server.synguard,
                self.server_if,
                PORT,
                self.xdp_mode,
                METRICS,
                self.cookies,
                # a stop drains for two periods at most: 8 s, not 32
                "" if self.server_cookies() == "kernel" else " --rotate-seconds %d" % ROTATE_SECONDS,
            ),
            path,
        )
        # bcc's compile: seconds on hardware, minutes under software emulation.
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while time.monotonic() < deadline:
            log = self.server.sh("cat %s" % path).stdout
            if "protecting" in log:
                return log
            if self.server.sh("kill -0 %d" % self.controller, check=False).returncode != 0:
                raise RuntimeError("synguard attach exited: %s" % log.strip())
            time.sleep(0.5)
        raise RuntimeError("synguard attach did not start in %d s" % ATTACH_TIMEOUT)

    def flood(self, kind):
        """trafgen on the attacker: rate * seconds frames at most, at the set
        rate, for at most seconds + 5. Returns (frames sent, frames received)."""
        conf = TRAFGEN % {
            "dst_mac": ", ".join("0x" + b for b in self.server.mac(self.server_if).split(":")),
            "src_mac": ", ".join("0x" + b for b in self.attacker.mac(self.attacker_if).split(":")),
            "dst_ip": ", ".join(self.server_ip.split(".")),
            "port": PORT,
            "flags": "0x02" if kind == "syn" else "0x10",
            "ack": "const32(0)" if kind == "syn" else "drnd(4)",
        }
        self.attacker.put(self.workdir + "/flood.cfg", conf)
        tx0, rx0 = self.attacker.link_packets(self.attacker_if)
        self.attacker.sh(
            "timeout %d trafgen --dev %s --conf %s/flood.cfg -b %dpps -n %d -P 1 >/dev/null 2>&1"
            % (self.seconds + 5, self.attacker_if, self.workdir, self.rate, self.rate * self.seconds),
            timeout=self.seconds + 30,
            check=False,
        )
        time.sleep(0.5)  # the last answers
        tx1, rx1 = self.attacker.link_packets(self.attacker_if)
        return tx1 - tx0, rx1 - rx0

    # --- the scenarios ----------------------------------------------------

    def setup(self):
        self.server_if = self.server_if or self.server.iface_to(self.client_ip())
        self.attacker_if = self.attacker.iface_to(self.server_ip)
        self.client_if = self.client.iface_to(self.server_ip)
        attacker_ip = self.attacker.json("ip -j route get %s" % self.server_ip)[0]["prefsrc"]
        for host in (self.server, self.client):
            host.put(self.workdir + "/listener.py", LISTENER)
            host.put(self.workdir + "/client.py", CLIENT)
        self.server.sh("%s detach %s >/dev/null 2>&1 || true" % (self.server.synguard, self.server_if))
        self.pids.append(
            (
                self.server,
                self.server.spawn(
                    "%s %s/listener.py %d" % (self.server.python, self.workdir, PORT),
                    self.log("listener.log"),
                ),
            )
        )
        # Kernel-sent packets to the spoofed sources go back to the attacker.
        self.server.sh("ip route replace %s via %s" % (SPOOF_NET4, attacker_ip))
        time.sleep(1)
        self.say(
            "hosts: server %s (%s), client, attacker (%s); flood %d/s for %d s"
            % (self.server_ip, self.server_if, self.attacker_if, self.rate, self.seconds)
        )

    def client_ip(self):
        return self.client.json("ip -j route get %s" % self.server_ip)[0]["prefsrc"]

    def hold(self):
        """The established connection, opened before anything else happens."""
        self.hold_started = time.monotonic()
        self.hold_log = self.log("hold.json")
        self.hold_pid = self.client.spawn(
            "%s %s/client.py hold %s %d 0" % (self.client.python, self.workdir, self.server_ip, PORT),
            self.hold_log,
        )
        self.pids.append((self.client, self.hold_pid))
        time.sleep(1)

    def baseline(self):
        s = self.step("before attach")
        r = self.connects(2)()
        s.figures.update(connects="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds")

    def do_attach(self):
        s = self.step("attach")
        t0 = time.monotonic()
        log = self.attach()
        s.figures.update(seconds=round(time.monotonic() - t0, 1))
        xdp = self.server.json("ip -j link show %s" % self.server_if)[0].get("xdp", {})
        mode = {1: "native", 2: "generic"}.get(xdp.get("mode"), xdp.get("mode"))
        s.figures.update(xdp_mode=mode)
        # What attach said of the mode it took (--mode auto: why generic).
        said = [
            line[len("synguard: ") :]
            for line in log.splitlines()
            if "XDP" in line and "protecting" not in line
        ]
        if said:
            s.figures.update(attach_said="; ".join(said))
        if self.xdp_mode == "auto":
            s.check(mode in ("native", "generic"), "XDP program attached (--mode auto)")
        else:
            s.check(mode == self.xdp_mode, "%s XDP program attached" % self.xdp_mode)
        r = self.connects(2)()
        s.figures.update(connects="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds")

    def tcp_out_rsts(self):
        """The server kernel's count of RSTs sent (its namespace's /proc/net/snmp)."""
        lines = [
            row.split()
            for row in self.server.sh("cat /proc/net/snmp").stdout.splitlines()
            if row.startswith("Tcp:")
        ]
        return int(lines[1][lines[0].index("OutRsts")])

    def under_flood(self, kind):
        """A flood with real connects throughout; the counters' deltas."""
        c0, rst0, txd0 = self.counters(), self.tcp_out_rsts(), self.server.tx_dropped(self.server_if)
        (_, rx0), (ctx0, _) = (
            self.server.link_packets(self.server_if),
            self.client.link_packets(self.client_if),
        )
        join = self.connects(self.seconds)
        sent, received = self.flood(kind)
        r = join()
        c1 = self.counters()
        (_, rx1), (ctx1, _) = (
            self.server.link_packets(self.server_if),
            self.client.link_packets(self.client_if),
        )
        d = {k: c1[k] - c0[k] for k in c1}
        d["kernel_rsts"] = self.tcp_out_rsts() - rst0
        d["tx_dropped"] = self.server.tx_dropped(self.server_if) - txd0
        # The LAN may lose some of a burst (a bridge's backlog, a switch):
        # synguard is judged on what reached the server's NIC, less what the
        # client sent meanwhile (its connects and the held connection).
        d["delivered"] = rx1 - rx0
        d["flood_delivered"] = d["delivered"] - (ctx1 - ctx0)
        return sent, received, r, d

    def syn_flood(self):
        s = self.step("SYN flood")
        sent, received, r, d = self.under_flood("syn")
        s.figures.update(
            sent=sent,
            delivered=d["delivered"],
            of_them_client=d["delivered"] - d["flood_delivered"],
            synacks_per_s=round(received / self.seconds),
            sendcookie=d["sendcookie"],
            ratelimited=d["ratelimited"],
            added=d["added"],
            cookie_failures=d["badcookie"],
            server_tx_dropped=d["tx_dropped"],
            connects="%d/%d" % (r["ok"], r["total"]),
            connect_p99_ms=round(r["p99_ms"] or 0, 2),
        )
        s.check(sent >= 0.9 * self.rate * self.seconds, "the attacker sent what was asked (>= 90%)")
        # The reflection limit (on by default) holds back SYN-ACKs to a
        # source prefix that has had its share: 198.19.0.0/16 is 256 /24s.
        s.check(d["delivered"] >= 0.5 * sent, "most of the flood reached the server (>= 50%)")
        s.check(
            d["sendcookie"] + d["ratelimited"] - r["total"] >= 0.99 * d["flood_delivered"],
            "synguard answered or rate-limited every SYN that arrived, in XDP (>= 99%)",
        )
        s.check(received >= d["sendcookie"] - r["total"] - 0.01 * sent, "the SYN-ACKs reached the attacker")
        s.check(d["kernel_rsts"] <= 0.01 * sent, "the kernel saw none of the flood (no RSTs)")
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every real connect succeeds during the flood")
        s.check(d["recvcookie"] + d["expanded"] >= r["ok"], "real connects went through the cookie hand-off")

    def ack_flood(self):
        s = self.step("ACK flood")
        sent, received, r, d = self.under_flood("ack")
        s.figures.update(
            sent=sent,
            delivered=d["delivered"],
            of_them_client=d["delivered"] - d["flood_delivered"],
            refused=d["badcookie"],
            rsts=d["rstsent"],
            kernel_rsts=d["kernel_rsts"],
            syncache_retransmits=d["retransmitted"],
            server_tx_dropped=d["tx_dropped"],
            connects="%d/%d" % (r["ok"], r["total"]),
            connect_p99_ms=round(r["p99_ms"] or 0, 2),
        )
        s.check(sent >= 0.9 * self.rate * self.seconds, "the attacker sent what was asked (>= 90%)")
        s.check(d["delivered"] >= 0.5 * sent, "most of the flood reached the server (>= 50%)")
        s.check(
            d["badcookie"] >= 0.99 * d["flood_delivered"],
            "synguard refused every bogus ACK that arrived, in XDP (>= 99%)",
        )
        # The RSTs for segments nobody knows stay within their budget (a
        # second's worth at once, then rstlimit a second); what else the
        # attacker receives is the syncache's SYN-ACK retransmissions for
        # the SYN flood's entries.
        budget = RSTLIMIT * (self.seconds + 1)
        s.check(
            d["rstsent"] <= budget and d["rstsent"] + d["rstlimited"] + d["rstheld"] == d["badcookie"],
            "RSTs within their budget (%d a second), the rest dropped" % RSTLIMIT,
        )
        s.check(
            d["kernel_rsts"] <= 0.01 * sent and received <= d["retransmitted"] + d["rstsent"] + 0.01 * sent,
            "nothing else answers the bogus ACKs (the kernel sends no RST)",
        )
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every real connect succeeds during the flood")

    def metrics(self):
        s = self.step("metrics")
        text = self.server.sh(
            "%s -c 'import urllib.request; print(urllib.request.urlopen("
            '"http://%s/metrics", timeout=5).read().decode())\'' % (self.server.python, METRICS)
        ).stdout
        c = self.counters()
        values = {}
        for line in text.splitlines():
            if line.startswith("synguard_") and "{" in line:
                name = line.split("{")[0]
                values[name] = values.get(name, 0) + float(line.rsplit(" ", 1)[1])
        s.figures.update(series=sum(1 for row in text.splitlines() if row.startswith("synguard_")))
        s.check(
            values.get("synguard_sendcookie_total", 0) >= c["sendcookie"] > 0,
            "synguard_sendcookie_total matches `synguard status`",
        )
        s.check(
            values.get("synguard_badcookie_total", 0) >= c["badcookie"] > 0,
            "synguard_badcookie_total matches `synguard status`",
        )

    def restart(self):
        s = self.step("kill -9 and restart")
        self.server.sh("kill -9 %d" % self.controller)
        xdp = self.server.json("ip -j link show %s" % self.server_if)[0].get("xdp")
        s.check(xdp is not None, "the data path stays attached while the controller is down")
        r = self.connects(2)()
        s.figures.update(connects_while_down="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds while it is down")
        log = self.attach()
        s.check("adopted" in log, "the restarted controller adopts the data path")
        r = self.connects(2)()
        s.figures.update(connects_after="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds after the restart")

    def stop(self):
        s = self.step("stop (SIGTERM: drain)")
        self.server.sh("kill -TERM %d" % self.controller)
        draining = False
        deadline = time.monotonic() + 10
        while not draining and time.monotonic() < deadline:
            draining = (
                "draining"
                in self.server.sh("%s status %s" % (self.server.synguard, self.server_if), check=False).stderr
            )
        s.check(draining, "status says draining")
        r = self.connects(2)()
        s.figures.update(connects_draining="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds while it drains")
        deadline = time.monotonic() + 75
        while self.server.sh("kill -0 %d" % self.controller, check=False).returncode == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("synguard did not stop in 75 s")
            time.sleep(0.2)
        self.controller = None
        xdp = self.server.json("ip -j link show %s" % self.server_if)[0].get("xdp")
        s.check(xdp is None, "no XDP program left on the interface")
        r = self.connects(2)()
        s.figures.update(connects="%d/%d" % (r["ok"], r["total"]))
        s.check(r["total"] > 0 and r["ok"] == r["total"], "every connect succeeds after the stop")

    def established(self):
        s = self.step("established connection")
        seconds = time.monotonic() - self.hold_started
        self.client.sh("kill -TERM %d" % self.hold_pid, check=False)
        deadline = time.monotonic() + 10
        while self.client.sh("kill -0 %d" % self.hold_pid, check=False).returncode == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the held connection's client did not stop")
            time.sleep(0.2)
        r = json.loads(self.client.sh("tail -n 1 %s" % self.hold_log).stdout)
        s.figures.update(seconds=round(seconds), echoes=r["echoes"], error=r["error"])
        s.check(r["error"] is None, "it echoed until the end, through attach, floods, restart and stop")
        # 10 a second if never stalled; a stall of 3 s would have ended it.
        s.check(r["echoes"] >= 5 * seconds, "it kept echoing (>= 5 a second)")

    def run(self):
        started = time.monotonic()
        try:
            self.setup()
            self.hold()
            for fn in (
                self.baseline,
                self.do_attach,
                self.syn_flood,
                self.ack_flood,
                self.metrics,
                self.restart,
                self.stop,
                self.established,
            ):
                fn()
                self.say(self.format(self.steps[-1]))
        finally:
            self.cleanup()
        return self.report(time.monotonic() - started)

    def cleanup(self):
        if self.controller is not None:
            self.server.sh("kill -QUIT %d" % self.controller, check=False)  # stop now
            time.sleep(2)
        for host, pid in self.pids:
            host.sh("kill %d" % pid, check=False)
        self.server.sh("ip route del %s 2>/dev/null; true" % SPOOF_NET4, check=False)
        for host in (self.server, self.client, self.attacker):
            host.sh("rm -rf %s" % self.workdir, check=False)

    def format(self, s):
        figures = ", ".join("%s %s" % (k.replace("_", " "), v) for k, v in s.figures.items())
        lines = ["  %-4s %-24s %s" % ("ok" if s.ok else "FAIL", s.name, figures)]
        lines += ["         failed: %s" % what for ok, what in s.checks if not ok]
        return "\n".join(lines)

    def report(self, elapsed):
        ok = all(s.ok for s in self.steps)
        self.say(
            "verdict: %s (%d steps, %d checks, %.0f s)"
            % ("PASS" if ok else "FAIL", len(self.steps), sum(len(s.checks) for s in self.steps), elapsed)
        )
        return {
            "pass": ok,
            "seconds": round(elapsed, 1),
            "steps": [
                {
                    "name": s.name,
                    "ok": s.ok,
                    "figures": s.figures,
                    "failed": [w for o, w in s.checks if not o],
                }
                for s in self.steps
            ],
        }


def valid_ifname(name):
    """An interface name as synguard takes one (runstate.valid_ifname; this
    file runs without the package): --server-if goes into shell commands."""
    return 0 < len(name) < 16 and all(c.isalnum() or c in "._-@" for c in name) and name not in (".", "..")


def add_cookies_option(ap, host="this kernel"):
    """--cookies, as the e2e suite and the demo take it (this file runs alone too: stdlib only)."""
    ap.add_argument(
        "--cookies",
        choices=("auto", "synguard", "kernel"),
        default="auto",
        help="whose cookies the server answers with (default auto: what %s gets)" % host,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("examples:\n", 1)[1],
    )
    ap.add_argument("--hosts", choices=("netns", "ssh"), default="netns")
    ap.add_argument("--ssh-config", help="ssh_config naming server, client, attacker (--hosts ssh)")
    ap.add_argument(
        "--server-ip", default="198.18.50.10", help="the server's address on the LAN (--hosts ssh)"
    )
    ap.add_argument("--synguard", default="synguard", help="the CLI on the server (--hosts ssh)")
    ap.add_argument(
        "--server-if",
        metavar="IFACE",
        help="the server's interface to attach to (--hosts ssh; default: the one it reaches the "
        "client through, e.g. a VLAN's eth1.100 where this names its parent eth1)",
    )
    ap.add_argument(
        "--xdp-mode",
        choices=("native", "generic", "auto"),
        default="native",
        help="attach --mode on the server, and the mode the attach step expects (default native; "
        "auto: whichever attach picks, shown as xdp mode)",
    )
    ap.add_argument("--rate", type=int, default=20000, help="flood frames per second (default 20000)")
    ap.add_argument("--seconds", type=int, default=5, help="length of each flood (default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    add_cookies_option(ap, "its kernel")
    args = ap.parse_args(argv)
    if args.server_if is not None and (args.hosts != "ssh" or not valid_ifname(args.server_if)):
        ap.error("--server-if takes an interface name (1-15 of a-z, 0-9, '._-@') and --hosts ssh")
    if args.hosts == "ssh":
        if not args.ssh_config:
            ap.error("--hosts ssh needs --ssh-config")
        result = Suite(
            *ssh_hosts(args.ssh_config, args.synguard),
            args.server_ip,
            args.rate,
            args.seconds,
            cookies=args.cookies,
            xdp_mode=args.xdp_mode,
            server_if=args.server_if,
        ).run()
    else:
        from synguard.lab.testbed import LanBed

        with LanBed() as bed:
            cli = "%s -m synguard.cli" % shlex.quote(sys.executable)
            hosts = [
                Host(
                    h,
                    ["nsenter", "--net=/run/netns/" + bed.ns[h], "sh", "-c"],
                    cli,
                    shlex.quote(sys.executable),
                )
                for h in ("server", "client", "attacker")
            ]
            result = Suite(
                *hosts, bed.SERVER, args.rate, args.seconds, cookies=args.cookies, xdp_mode=args.xdp_mode
            ).run()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
