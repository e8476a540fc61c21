"""Lifecycle without loss, with real clients: reload, restart, upgrade,
takeover, stop (the drain) and monitor mode, each with handshakes in flight
that synguard answered.

A held handshake: a real client whose SYN was answered by synguard (its
SYN-ACK carries synguard's cookie), whose ACK is dropped in the client
namespace (nft) while the operator acts; then the drop is lifted and the
client sends its first data, which carries the ACK number: the handshake
must complete (the echo comes back) unless the operator asked for loss
(detach --now).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading

import pytest
from synguard.lab import netns
from synguard.lab.support import status, wait_until
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed, echo, spoofed_syns

pytestmark = pytest.mark.netns
PORT = 8080
HELD = 20
PAYLOAD = b"held handshake"
# --rotate-seconds 4: a drain lasts at most two periods (8 s here, 32 s by default).
ROTATE = "4"


class Held:
    """n real connections whose SYN-ACK came from synguard and whose ACK the
    client's firewall holds back: each client is established, synguard has
    seen no ACK. After release() each sends its first data, which carries
    the ACK number, and must get it echoed back."""

    def __init__(self, bed, n=HELD):
        self.bed = bed
        netns.run(bed.client_ns, ["nft", "-f", "-"], input=HOLD % PORT, text=True, check=True)
        self.socks = []
        for i in range(n):
            with netns.netns(bed.client_ns):
                s = socket.socket(socket.AF_INET6 if i % 2 else socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((SERVER6 if i % 2 else SERVER4, PORT))  # the SYN-ACK is back: the client is established
            self.socks.append(s)

    def release(self):
        netns.run(self.bed.client_ns, ["nft", "delete", "table", "inet", "sghold"], check=True)

    def completed(self, timeout=10):
        """How many got their first data echoed back."""
        results = []

        def one(s):
            s.settimeout(timeout)
            try:
                results.append(echo(s, PAYLOAD) == PAYLOAD)
            except OSError:
                results.append(False)
            finally:
                s.close()

        threads = [threading.Thread(target=one, args=(s,)) for s in self.socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(results)


HOLD = """
table inet sghold {
  chain out {
    type filter hook output priority 0; policy accept;
    tcp dport %d tcp flags != syn drop
  }
}
"""


@pytest.fixture
def bed():
    with Testbed() as b:
        srv = EchoServer(b, PORT)
        try:
            yield b
        finally:
            srv.close()


def status_json(bed):
    """status --json whatever its exit code (1 while draining)."""
    return json.loads(bed.synguard_run("status", bed.server_if, "--json").stdout)


def stopped(proc, timeout=60):
    """proc's exit code and what it wrote, once it has exited."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def systemd_restarting(tmp_path, unit="synguard@test.service"):
    """The environment of a controller that systemd is restarting: a
    systemctl whose list-jobs shows the unit's restart job (what systemd
    shows while it stops a unit to start it again)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text('#!/bin/sh\n[ "$1" = list-jobs ] && echo "4242 %s restart running"\nexit 0\n' % unit)
    fake.chmod(0o755)
    return {**os.environ, "PATH": "%s:%s" % (bindir, os.environ["PATH"]), "SYNGUARD_UNIT": unit}


def other_version(tmp_path):
    """A synguard of other sources (an upgrade): the package copied, one
    constant of its data path changed. Returns the environment that runs it."""
    root = tmp_path / "upgrade"
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    shutil.copytree(os.path.join(here, "controller"), root / "synguard")
    shutil.copytree(os.path.join(here, "bpf"), root / "synguard" / "bpf")
    c = root / "synguard" / "bpf" / "xdp_synguard.c"
    text = c.read_text()
    assert "#define SG_HANDOFF_WINDOW_NS (10 * SG_MS)" in text
    c.write_text(
        text.replace("#define SG_HANDOFF_WINDOW_NS (10 * SG_MS)", "#define SG_HANDOFF_WINDOW_NS (11 * SG_MS)")
    )
    return {**os.environ, "PYTHONPATH": str(root)}


def start(bed, *extra, env=None, ports=(PORT,)):
    if "--config" in extra:
        return bed.attach(None, "--no-metrics", *extra, env=env)
    return bed.attach(list(ports), "--no-metrics", "--rotate-seconds", ROTATE, *extra, env=env)


def test_reload_keeps_handshakes_and_applies_the_file(bed, tmp_path):
    conf = tmp_path / "s.toml"
    conf.write_text("ports = [%d]\nrotate_seconds = 2\n[settings]\nratelimit = 1000\n" % PORT)
    proc = start(bed, "--config", str(conf))
    held = Held(bed)
    conf.write_text("ports = [%d, 8443]\nrotate_seconds = 3\n[settings]\nratelimit = 200\n" % PORT)
    proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: status(bed)["ports"] == [PORT, 8443], 10)
    st = status(bed)
    assert st["settings"]["ratelimit"] == 200 and st["rotate_seconds"] == 3
    held.release()
    assert held.completed() == HELD
    code, said = stopped_now(proc)
    assert code == 0
    assert (
        "reloaded %s: ports %d -> %d,8443; ratelimit=200; key rotation every 3s" % (conf, PORT, PORT) in said
    )


def stopped_now(proc):
    proc.send_signal(signal.SIGQUIT)
    return stopped(proc)


def test_reload_with_a_bad_file_changes_nothing(bed, tmp_path):
    conf = tmp_path / "s.toml"
    conf.write_text("ports = [%d]\nrotate_seconds = 2\n" % PORT)
    proc = start(bed, "--config", str(conf))
    before = status(bed)
    for bad, _why in (  # the whys: in the log, below
        ("ports = [%d]\nrotate_seconds = 2\n[settings]\nratelimit = -1\n" % PORT, "ratelimit must be"),
        ('ports = [%d]\nrotate_seconds = 2\nmode = "generic"\n' % PORT, "mode cannot change on reload"),
        ("ports = [%d\n" % PORT, "is not valid TOML"),
    ):
        conf.write_text(bad)
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGUSR1)  # a rotation after the reload: the loop has been through it
        assert wait_until(lambda n=before["key_rotations"]: status(bed)["key_rotations"] > n, 10)
        after = status(bed)
        for k in ("ports", "settings", "rotate_seconds", "mode", "metrics_addr"):
            assert after[k] == before[k], (bad, k)
        before = after
    code, said = stopped_now(proc)
    assert code == 0
    refusals = [line for line in said.splitlines() if "reload refused, the running config kept" in line]
    assert len(refusals) == 3 and "ratelimit must be within 0..10000000" in refusals[0]
    assert "mode cannot change on reload" in refusals[1] and "is not valid TOML" in refusals[2]


def test_drain_completes_handshakes_in_flight_then_removes_everything(bed):
    """detach: new SYNs go to the kernel at once, handshakes synguard
    answered still complete, and then everything is taken off."""
    proc = start(bed)
    held = Held(bed)
    detach = bed.synguard("detach", bed.server_if, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: bed.synguard_run("status", bed.server_if).returncode == 1, 10)
    r = bed.synguard_run("status", bed.server_if, "--json")
    st = json.loads(r.stdout)
    assert st["phase"] == "draining" and 0 < st["drain_remaining_seconds"] <= 2 * int(ROTATE)
    assert "draining: new SYNs go to the kernel" in r.stderr
    held.release()
    assert held.completed() == HELD
    assert bed.connect(SERVER4, PORT)["echo_ok"]  # a new one: the kernel's own handshake now
    assert status_json(bed)["counters"]["drained"] > 0
    out, err = detach.communicate(timeout=30)
    assert detach.returncode == 0, err
    assert "draining: new SYNs go to the kernel; handshakes synguard answered complete for" in out
    assert "stopped the controller (pid %d), which removed XDP program" % proc.pid in out
    assert stopped(proc)[0] == 0
    assert not os.path.exists(bed.pins())


def test_detach_now_skips_the_drain(bed):
    """The loss is asked for: handshakes synguard answered get an RST."""
    proc = start(bed)
    held = Held(bed, 4)
    r = bed.synguard_run("detach", bed.server_if, "--now")
    assert r.returncode == 0 and "draining" not in r.stdout
    held.release()
    assert held.completed(timeout=10) == 0
    assert stopped(proc)[0] == 0


@pytest.mark.parametrize(
    "how",
    ["systemd restart", "takeover", "upgrade", "upgrade by takeover", "stop, then attach while it drains"],
)
def test_restarts_keep_handshakes_in_flight(bed, tmp_path, how):
    env = systemd_restarting(tmp_path) if how in ("systemd restart", "upgrade") else None
    first = start(bed, env=env)
    held = Held(bed)
    new_env = other_version(tmp_path) if how.startswith("upgrade") else None
    if how.startswith("stop"):  # a draining controller hands over to any attach
        first.send_signal(signal.SIGTERM)
        assert wait_until(lambda: status_json(bed)["phase"] == "draining", 10)
        second = start(bed)
        code, said = stopped(first)
        assert code == 0 and "handed %s over to the new controller" % bed.server_if in said
    elif "takeover" in how:
        second = start(bed, "--takeover", env=new_env)
        first.send_signal(signal.SIGTERM)  # a rolling update stops the old one after the new one took over
        code, said = stopped(first)
        assert code == 0 and "handed %s over to the new controller" % bed.server_if in said
    else:
        first.send_signal(signal.SIGTERM)
        code, said = stopped(first)
        assert code == 0 and "left the data path on %s protecting" % bed.server_if in said
        assert status(bed)["phase"] == "handover"
        second = start(bed, env=new_env)
    held.release()
    assert held.completed() == HELD
    st = status(bed)
    assert st["controller_pid"] == second.pid and st["phase"] == "protecting"
    code, said = stopped_now(second)
    assert code == 0
    if how.startswith("upgrade"):
        assert "replaced the data path on %s in place, on its maps: " % bed.server_if in said
        assert "secrets" in said and "syncache" in said
    else:
        assert "adopted the data path left attached on %s" % bed.server_if in said


@pytest.mark.parametrize("how", ["systemd restart", "upgrade"])
def test_restart_and_upgrade_under_a_flood_leave_no_syn_to_the_kernel(bed, tmp_path, how):
    """A bounded SYN flood runs through the whole restart: every flood SYN
    is answered at XDP, none reaches the kernel's listener (it sends
    nothing, mints no cookie, drops nothing from its queues)."""
    first = start(bed, env=systemd_restarting(tmp_path))
    kernel = kernel_syn_counters(bed)
    before = status(bed)["counters"]
    sent = []
    flood = threading.Thread(target=lambda: sent.append(bed.flood(spoofed_syns(2_000_000, PORT), seconds=12)))
    flood.start()
    first.send_signal(signal.SIGTERM)
    assert stopped(first)[0] == 0
    second = start(bed, env=other_version(tmp_path) if how == "upgrade" else None)
    flood.join()
    after = status(bed)["counters"]
    assert kernel_syn_counters(bed) == kernel
    answered = sum(after[k] - before[k] for k in ("sendcookie", "dupsyn", "ratelimited"))
    assert answered == sent[0] > 0
    assert stopped_now(second)[0] == 0


def kernel_syn_counters(bed):
    """The server namespace's kernel counters a SYN reaching a listener
    moves: segments it sent (its SYN-ACK), cookies it minted, its queues'
    drops."""
    out = netns.run(
        bed.server_ns, ["cat", "/proc/net/netstat", "/proc/net/snmp"], capture_output=True, text=True
    )
    rows = {}
    lines = out.stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        rows.update({proto + k: int(v) for k, v in zip(names.split()[1:], values.split()[1:])})
    wanted = (
        "TcpOutSegs",
        "TcpExtSyncookiesSent",
        "TcpExtListenOverflows",
        "TcpExtListenDrops",
        "TcpExtTCPReqQFullDrop",
    )
    return {k: rows[k] for k in wanted}


def test_monitor_then_enforce_without_detaching(bed):
    """Monitor mode passes every frame (the kernel makes the connections and
    synguard only counts what it would do); `set monitor=0` enforces on the
    same data path."""
    proc = start(bed, "--monitor")
    before = status(bed)["counters"]
    assert all(bed.connect(s, PORT)["echo_ok"] for s in (SERVER4, SERVER6) * 3)
    st = status(bed)
    c = {k: st["counters"][k] - before[k] for k in before}
    assert st["monitor"] and c["sendcookie"] == 6 and c["completed"] == 0 and c["recvcookie"] == 0
    assert c["ratelimited"] == 0 and c["verified"] == 0
    r = bed.synguard_run("set", bed.server_if, "monitor=0")
    assert r.returncode == 0, r.stderr
    before = status(bed)["counters"]
    assert all(bed.connect(s, PORT)["echo_ok"] for s in (SERVER4, SERVER6) * 3)
    st = status(bed)
    assert not st["monitor"] and st["counters"]["completed"] - before["completed"] == 6
    assert stopped_now(proc)[0] == 0


def test_status_and_metrics_say_the_mode(bed):
    proc = bed.attach([PORT], "--monitor", "--metrics-addr", "127.0.0.1:9733")
    with netns.netns(bed.server_ns):
        import urllib.request

        text = urllib.request.urlopen("http://127.0.0.1:9733/metrics").read().decode()
    assert 'synguard_monitor{interface="%s"} 1.0' % bed.server_if in text
    assert 'enforce="monitor"' in text
    assert "MONITOR mode" in bed.synguard_run("status", bed.server_if).stdout
    assert stopped_now(proc)[0] == 0
