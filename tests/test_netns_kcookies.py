"""Kernel-cookie mode (--cookies kernel) with real clients: the kernel
mints the cookies at XDP and its own cookie check makes the sockets. The
same checks as test_netns.py where they apply, held to what the kernel
counts (TcpExtSyncookiesRecv) and to the options both ends got."""

import os
import shutil
import signal
import socket
import tempfile
import time

import pytest
from synguard import host, kernelconf, packets
from synguard.lab import netns, testbed
from synguard.lab.support import status
from synguard.lab.testbed import (
    IPPROTO_MPTCP,
    SERVER4,
    SERVER6,
    Capture,
    EchoServer,
    Testbed,
    forged_acks,
    spoofed_syns,
)

pytestmark = pytest.mark.netns
PORT, PORT_MPTCP = 8080, 8082
MODE_SYSCTLS = {"net.ipv4.tcp_syncookies": "1", "net.ipv4.tcp_timestamps": "1"}  # the defaults


def tcp_ext(bed, name):
    """A TcpExt counter of the server namespace (what nstat shows)."""
    with netns.netns(bed.server_ns):
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))[name])


def server_sysctls(bed):
    with netns.netns(bed.server_ns):
        return {name: host.read_sysctl(name)[0] for name in MODE_SYSCTLS}


def connect(bed, server, port, payload, proto=0):
    """A real connection from the client: echo payload; the client's
    TCP_INFO and local address."""
    with netns.netns(bed.client_ns):
        s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_STREAM, proto)
    try:
        s.settimeout(5)
        s.connect((server, port))
        info = testbed.tcp_info(s) if not proto else None
        return {"local": s.getsockname(), "info": info, "echo_ok": testbed.echo(s, payload) == payload}
    finally:
        s.close()


@pytest.fixture(scope="module")
def protected():
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        assert server_sysctls(bed) == MODE_SYSCTLS
        proc = bed.attach([PORT], "--mode", "native", "--no-metrics", "--cookies", "kernel")
        try:
            yield bed, srv, proc
        finally:
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            srv.close()
            assert server_sysctls(bed) == MODE_SYSCTLS, "detach sets the sysctls back"


def test_attached_with_the_kernels_cookies(protected):
    bed, _, _ = protected
    st = status(bed)
    assert st["protected"] and st["cookies"] == "kernel" and st["mode"] == "native"
    assert st["key_age_seconds"] is None and st["key_rotations"] is None
    assert st["sysctls_changed"] == MODE_SYSCTLS
    assert server_sysctls(bed) == {"net.ipv4.tcp_syncookies": "2", "net.ipv4.tcp_timestamps": "2"}
    human = bed.synguard_run("status", bed.server_if).stdout
    assert "cookies: the kernel's" in human


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_real_connections_get_the_options_the_tsval_carried(protected, family):
    """8 option combinations (client sysctls) x 3 connections, 64 KB each
    way. The kernel made every socket from its cookie (SyncookiesRecv), and
    both ends agree on the options: with timestamps, window scale and SACK
    as offered (the TSval carried them); without, neither (the kernel cannot
    know them), as with the kernel's own cookies."""
    bed, srv, _ = protected
    server = SERVER4 if family == "v4" else SERVER6
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    n_before = len(srv.accepted)
    cfg = status(bed)["config"]
    with netns.netns(bed.client_ns):
        client_ws = kernelconf.kernel_wscale()
    results = bed.over_client_options(lambda: connect(bed, server, PORT, os.urandom(65536)), 3)
    assert all(r["echo_ok"] for _, r in results)
    time.sleep(0.2)  # the accept thread records the last ones
    accepted = {a["peer"][1]: a for a in srv.accepted[n_before:]}
    assert len(accepted) == len(results) == 24
    for (ts, sack, ws), r in results:
        mine, theirs = r["info"], accepted[r["local"][1]]["info"]
        expect = (bool(ts), bool(ts and sack), bool(ts and ws))
        assert (mine["timestamps"], mine["sack"], mine["wscale"]) == expect, (ts, sack, ws, mine)
        assert (theirs["timestamps"], theirs["sack"], theirs["wscale"]) == expect, (ts, sack, ws, theirs)
        if ts and ws:
            assert theirs["snd_wscale"] == mine["rcv_wscale"] == client_ws
            assert theirs["rcv_wscale"] == mine["snd_wscale"] == cfg["wscale"]
    after = status(bed)["counters"]
    assert tcp_ext(bed, "SyncookiesRecv") - recv_before == 24, "the kernel made each socket from its cookie"
    assert after["sendcookie"] - before["sendcookie"] == 24
    handed = sum(after[k] - before[k] for k in ("recvcookie", "expanded"))
    assert handed == 24
    assert after["badcookie"] == before["badcookie"], "a real client's segment was dropped"
    assert after["completed"] == 0 and after["aborted"] == 0  # no tc hand-off in this mode


def is_synack(frame):
    """A TCP SYN-ACK (the capture also sees neighbour discovery, ARP)."""
    try:
        return packets.parse_frame(frame).flags == packets.SYN | packets.ACK
    except (ValueError, IndexError):
        return False


def test_the_synack_tsval_encodes_the_clients_options(protected):
    """The low 6 bits of our TSval, as the kernel's cookie_init_timestamp
    writes them: the client's window scale (0xf: none), SACK, ECN; the rest
    the server's ms clock, never ahead of it."""
    bed, _, _ = protected
    cap = Capture(bed)
    try:
        bed.sysctl(bed.client_ns, "net.ipv4.tcp_sack", 0)
        connect(bed, SERVER4, PORT, b"a")
        bed.sysctl(bed.client_ns, "net.ipv4.tcp_sack", 1)
        connect(bed, SERVER6, PORT, b"b")
        with netns.netns(bed.server_ns):
            now_ms = time.monotonic_ns() // 1000000
        synacks = [packets.parse_frame(f) for _, f in cap.collect(0.3, is_synack)]
    finally:
        bed.sysctl(bed.client_ns, "net.ipv4.tcp_sack", 1)
        cap.close()
    with netns.netns(bed.client_ns):
        client_ws = kernelconf.kernel_wscale()
    assert [s.sport for s in synacks] == [PORT, PORT]
    (v4, v6) = synacks
    assert v4.options["ts"][0] & 0x3F == client_ws  # no SACK
    assert v6.options["ts"][0] & 0x3F == client_ws | 0x10
    for s in synacks:
        assert now_ms - 2000 < s.options["ts"][0] <= now_ms


def test_forged_acks_are_dropped_before_the_kernel(protected):
    bed, srv, _ = protected
    before, n_before = status(bed)["counters"], len(srv.accepted)
    failed = tcp_ext(bed, "SyncookiesFailed")
    frames = list(forged_acks(2000, PORT)) + list(forged_acks(1000, PORT, v6=True))
    sent = bed.flood(frames, seconds=20)
    assert sent == 3000
    time.sleep(0.3)
    after = status(bed)["counters"]
    assert after["badcookie"] - before["badcookie"] == sent
    assert len(srv.accepted) == n_before
    assert tcp_ext(bed, "SyncookiesFailed") == failed, "XDP dropped them: the kernel never saw one"


def test_real_connections_behind_an_extension_header(protected):
    """A client sending every segment behind a destination options header:
    the SYN answered at XDP with the kernel's cookie, the third ACK passed
    up, and the kernel's own cookie check (after the header) makes the
    socket."""
    bed, _, _ = protected
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    results = [bed.connect(SERVER6, PORT, sockopts=[testbed.ipv6_padding_header()]) for _ in range(5)]
    assert all(r["echo_ok"] for r in results)
    after = status(bed)["counters"]
    assert after["sendcookie"] - before["sendcookie"] == 5
    assert after["exthdr"] - before["exthdr"] >= 10
    assert tcp_ext(bed, "SyncookiesRecv") - recv_before == 5


def test_real_clients_connect_during_a_syn_flood(protected):
    bed, srv, _ = protected
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    frames = list(spoofed_syns(12000, PORT)) + list(spoofed_syns(4000, PORT, v6=True))
    sent, results = bed.connects_during_flood(frames, lambda s: connect(bed, s, PORT, b"y" * 2000))
    time.sleep(0.3)
    after = status(bed)["counters"]
    assert all(r["echo_ok"] for r in results)
    answered = sum(after[k] - before[k] for k in ("sendcookie", "dupsyn", "ratelimited"))
    assert answered == sent + len(results)
    assert tcp_ext(bed, "SyncookiesRecv") - recv_before == len(results)
    assert after["nocookie"] == before["nocookie"]


def test_refusals_in_kernel_mode(protected):
    """What needs synguard's own cookies is refused, one line, exit 2."""
    bed, _, _ = protected
    key = os.path.join(tempfile.mkdtemp(), "fleet.key")
    assert bed.synguard_run("keygen", key).returncode == 0
    for extra, says in (
        (("--fleet-key", key), "--fleet-key needs synguard's cookies"),
        (("--rotate-seconds", "30"), "--rotate-seconds needs synguard's cookies"),
        (("--syncookies", "0"), "syncookies=0 needs synguard's cookies"),
    ):
        r = bed.synguard_run("attach", "lo", "--ports", "9", "--cookies", "kernel", "--no-metrics", *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    shutil.rmtree(os.path.dirname(key))
    r = bed.synguard_run("rotate", bed.server_if)
    assert r.returncode == 2 and "nothing to rotate" in r.stderr
    r = bed.synguard_run("set", bed.server_if, "syncookies=0")
    assert r.returncode == 2 and "syncookies=0 needs synguard's cookies" in r.stderr
    assert status(bed)["settings"]["syncookies"] == 1


def test_restart_adopts_and_detach_restores():
    """kill -9: the data path keeps answering; a restart adopts it (same
    mode); a restart asking for synguard's cookies replaces it instead;
    SIGQUIT (stop now) sets the sysctls back and leaves nothing."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--no-metrics", "--cookies", "kernel")
            proc.kill()
            proc.wait()
            assert all(connect(bed, s, PORT, b"z" * 5000)["echo_ok"] for s in (SERVER4, SERVER6))
            proc = bed.attach([PORT], "--no-metrics", "--cookies", "kernel")
            st = status(bed)
            assert st["cookies"] == "kernel" and st["sysctls_changed"] == MODE_SYSCTLS
            assert st["counters"]["sendcookie"] >= 2, "adopted: the counters went on"
            assert all(connect(bed, s, PORT, b"z" * 5000)["echo_ok"] for s in (SERVER4, SERVER6))
            proc.kill()
            proc.wait()
            proc = bed.attach([PORT], "--no-metrics", "--cookies", "synguard")
            st = status(bed)
            assert st["cookies"] == "synguard" and st["counters"]["sendcookie"] == 0, "replaced, not adopted"
            assert connect(bed, SERVER4, PORT, b"w")["echo_ok"]
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            assert server_sysctls(bed) == MODE_SYSCTLS
        finally:
            srv.close()


def test_an_mptcp_listener_is_answered_with_the_kernels_cookies():
    """The kernel's cookie path takes MPTCP listeners: plain TCP and MPTCP
    clients (which fall back to TCP: our SYN-ACK has no MP_CAPABLE)."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT_MPTCP, proto=IPPROTO_MPTCP)
        try:
            proc = bed.attach([PORT_MPTCP], "--no-metrics", "--cookies", "kernel")
            recv = tcp_ext(bed, "SyncookiesRecv")
            for server in (SERVER4, SERVER6):
                assert connect(bed, server, PORT_MPTCP, b"m" * 50000)["echo_ok"]
                assert connect(bed, server, PORT_MPTCP, b"m" * 50000, IPPROTO_MPTCP)["echo_ok"]
            c = status(bed)["counters"]
            assert c["sendcookie"] == 4 and c["mptcp"] == 0
            assert tcp_ext(bed, "SyncookiesRecv") - recv == 4
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
        finally:
            srv.close()


def test_a_sysctl_changed_while_attached_is_set_back(protected):
    """tcp_timestamps back at 1 would make the kernel decode our TSval's
    options with its per-connection offset (a wrong window scale): the
    controller's next check (SIGUSR1 asks for it now) sets 2 again; detach
    still sets back the value from before attach."""
    bed, _, proc = protected
    bed.sysctl(bed.server_ns, "net.ipv4.tcp_timestamps", 1)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while server_sysctls(bed)["net.ipv4.tcp_timestamps"] != "2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_sysctls(bed)["net.ipv4.tcp_timestamps"] == "2"
    assert status(bed)["sysctls_changed"] == MODE_SYSCTLS
    assert connect(bed, SERVER4, PORT, b"t" * 100000)["echo_ok"]
