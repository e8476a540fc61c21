"""Fleet mode on a wire: the SYN answered by host A, the ACK and the data
landing on host B (FleetBed's router splits them), as after an ECMP rehash."""

import json
import os
import signal
import socket

import pytest
from synguard import fleet
from synguard.lab import netns
from synguard.lab.testbed import EchoServer, FleetBed, echo

pytestmark = pytest.mark.netns
PORT = 8080


@pytest.fixture
def bed(tmp_path):
    key = tmp_path / "fleet.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(fleet.generate())
    with FleetBed() as b:
        b.key = str(key)
        b.servers = {s: EchoServer(None, PORT, ns=b.ns[s]) for s in ("a", "b")}
        try:
            yield b
        finally:
            for srv in b.servers.values():
                srv.close()


def exchange(bed, payload, timeout):
    with netns.netns(bed.client_ns):
        c = socket.socket()
    c.settimeout(timeout)
    try:
        c.connect((FleetBed.SERVICE, PORT))
        return echo(c, payload)
    finally:
        c.close()


def counters(bed, server):
    r = bed.synguard_run(server, "status", bed.ifs[server], "--json")
    return json.loads(r.stdout)["counters"]


@pytest.mark.parametrize("mode", [[], ["--syncookies-only", "1"]], ids=["syncache", "cookies-only"])
def test_fleet_key_lets_host_b_complete_what_host_a_answered(bed, mode):
    """With the syncache on, A also keeps an entry, which it retransmits and
    expires; B has none and goes by the cookie."""
    procs = [bed.attach(s, [PORT], "--no-metrics", "--fleet-key", bed.key, *mode) for s in ("a", "b")]
    payload = os.urandom(200000)
    for _ in range(5):
        assert exchange(bed, payload, timeout=10) == payload  # data both ways
    a, b = counters(bed, "a"), counters(bed, "b")
    assert a["sendcookie"] == 5 and a["recvcookie"] == 0  # A only ever saw SYNs
    assert b["recvcookie"] == 5 and b["completed"] == 5 and b["sendcookie"] == 0
    assert len(bed.servers["b"].accepted) == 5 and not bed.servers["a"].accepted
    st = json.loads(bed.synguard_run("b", "status", bed.ifs["b"], "--json").stdout)
    assert st["fleet"] is True
    for p in procs:
        p.send_signal(signal.SIGQUIT)
        assert p.wait(30) == 0


def test_without_the_fleet_key_host_b_drops_what_host_a_answered(bed):
    """Why fleet mode exists: per-host keys (like the kernel's own syncookies)
    cannot vouch for a handshake another host answered."""
    procs = [bed.attach(s, [PORT], "--no-metrics", "--syncookies-only", "1") for s in ("a", "b")]
    with pytest.raises(OSError):  # the client's ACK and data die at B: no echo
        exchange(bed, b"hello", timeout=3)
    b = counters(bed, "b")
    assert b["badcookie"] >= 1 and b["completed"] == 0
    assert not bed.servers["b"].accepted and not bed.servers["a"].accepted
    for p in procs:
        p.send_signal(signal.SIGQUIT)
        assert p.wait(30) == 0


def test_a_world_readable_fleet_key_is_refused(bed):
    os.chmod(bed.key, 0o644)
    r = bed.synguard_run("a", "attach", bed.ifs["a"], "--ports", str(PORT), "--fleet-key", bed.key)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "synguard: error: fleet key %s must be owned by root and mode 0600 (it is 0644, uid 0)" % bed.key
    )
