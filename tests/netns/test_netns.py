"""Integration: synguard attached in native XDP mode to a veth in a server
namespace, real kernel TCP clients in a client namespace
(controller/lab/testbed.py).

Tests on the `protected` fixture run with each cookie mode unless marked
for one (synguard_only, kernel_only). With the kernel's cookies (--cookies
kernel) the kernel mints the cookies at XDP and its own cookie check makes
the sockets: held to what the kernel counts (TcpExtSyncookiesRecv) and to
the options both ends got.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from synguard import datapath, host, kernelconf, layout, libbpf, netlink, packets
from synguard.lab import cookie, netns, testbed
from synguard.lab.support import connections_made, on_interface, status, wait_until
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
from synguard.maps import Maps

pytestmark = pytest.mark.netns
PORT, PORT_MPTCP = 8080, 8082
MODE_SYSCTLS = {"net.ipv4.tcp_syncookies": "1", "net.ipv4.tcp_timestamps": "1"}  # the defaults


def server_keys(bed):
    with Maps(bed.pins()) as maps:
        s = maps.secrets.lookup(0)
        return [cookie.key_bytes(k.k0, k.k1) for k in s.keys]


def leftovers(bed):
    """What synguard could have left on the server side."""
    on = on_interface(bed)
    return {"xdp": on["xdp"][0], "tc": on["tc"], **{k: on[k] for k in ("clsact", "pins", "run files")}}


NOTHING_LEFT = {"xdp": 0, "tc": 0, "clsact": False, "pins": False, "run files": []}


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


def accepted_since(srv, n_before, n):
    """The echo server's records of the n sockets it accepted after its
    first n_before, by client port (its accept thread records each a
    little after the client's connect returned)."""
    assert wait_until(lambda: len(srv.accepted) >= n_before + n, 5)
    return {a["peer"][1]: a for a in srv.accepted[n_before:]}


@pytest.fixture(scope="module", params=["kernel", "synguard"])
def protected(request):
    """(bed, echo server, controller, cookies): synguard attached natively
    with the param's cookies."""
    cookies = request.param
    # synguard's: one key period longer than the module.
    rotate = ("--rotate-seconds", "600") if cookies == "synguard" else ()
    args = ("--mode", "native", "--no-metrics", "--cookies", cookies, *rotate)
    with testbed.protected([PORT], *args) as (bed, srv, proc):
        yield bed, srv, proc, cookies
        proc.send_signal(signal.SIGQUIT)  # now, to see what detach left
        assert proc.wait(30) == 0
        assert server_sysctls(bed) == MODE_SYSCTLS, "detach sets the sysctls back"


# pytest groups a mode's tests, these too: one test bed per mode.
kernel_only = pytest.mark.parametrize("protected", ["kernel"], indirect=True)
synguard_only = pytest.mark.parametrize("protected", ["synguard"], indirect=True)


def test_attached_natively(protected):
    bed, _, _, cookies = protected
    st = status(bed)
    assert st["protected"] and st["mode"] == "native" and st["ports"] == [PORT]
    assert st["controller_running"] and st["cookies"] == cookies
    if cookies == "kernel":
        assert st["key_age_seconds"] is None and st["key_rotations"] is None
        assert st["sysctls_changed"] == MODE_SYSCTLS
        assert server_sysctls(bed) == {"net.ipv4.tcp_syncookies": "2", "net.ipv4.tcp_timestamps": "2"}
        assert "cookies: the kernel's" in bed.synguard_run("status", bed.server_if).stdout
    else:
        assert 0 <= st["key_age_seconds"] < 600


@synguard_only
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_real_connections_through_cookies(protected, family):
    """8 option combinations (client sysctls) x 4 connections, 64 KB each
    way: every accepted socket's ISN is our cookie and carries the options
    the cookie encoded."""
    bed, srv, _, _ = protected
    server = SERVER4 if family == "v4" else SERVER6
    before = status(bed)["counters"]
    n_before = len(srv.accepted)
    keys = server_keys(bed)
    cfg = status(bed)["config"]
    results = bed.over_client_options(
        lambda: bed.connect(server, PORT, payload=os.urandom(65536), inspect=True), 4
    )

    assert all(r["echo_ok"] for _, r in results)
    accepted = accepted_since(srv, n_before, len(results))
    assert len(accepted) == len(results) == 32
    mss = 1460 if family == "v4" else 1440  # veth MTU 1500: in both tables
    with netns.netns(bed.client_ns):
        client_ws = kernelconf.kernel_wscale()
    for (ts, sack, ws), r in results:
        a = accepted[r["local"][1]]
        assert a["iss"] == r["server_iss"], "the SYN-ACK's ISS is the accepted socket's ISN"
        client = r["local"][0]
        assert cookie.check_ack(
            keys,
            client,
            server,
            r["local"][1],
            PORT,
            (r["isn"] + 1) & 0xFFFFFFFF,
            (a["iss"] + 1) & 0xFFFFFFFF,
        )
        got_mss, got_ws, got_sack, _ = cookie.decode_meta(a["iss"] & 0xFF, family == "v6")
        assert got_mss == mss and got_sack == bool(sack)
        info = a["info"]
        assert (info["timestamps"], info["sack"], info["wscale"]) == (bool(ts), bool(sack), bool(ws))
        if ws:
            assert info["snd_wscale"] == got_ws == layout.wscale_table()[cookie.wscale_index(client_ws)]
            assert info["rcv_wscale"] == cfg["wscale"]
        assert info["snd_mss"] == mss - (12 if ts else 0)
    after = status(bed)["counters"]
    assert after["completed"] - before["completed"] == 32
    assert after["sendcookie"] - before["sendcookie"] == 32
    assert after["aborted"] == before["aborted"]
    assert after["badcookie"] == before["badcookie"], "a real client's segment was dropped"


@kernel_only
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_real_connections_get_the_options_the_tsval_carried(protected, family):
    """8 option combinations (client sysctls) x 3 connections, 64 KB each
    way. The kernel made every socket from its cookie (SyncookiesRecv), and
    both ends agree on the options: with timestamps, window scale and SACK
    as offered (the TSval carried them); without, neither (the kernel cannot
    know them), as with the kernel's own cookies."""
    bed, srv, _, _ = protected
    server = SERVER4 if family == "v4" else SERVER6
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    n_before = len(srv.accepted)
    cfg = status(bed)["config"]
    with netns.netns(bed.client_ns):
        client_ws = kernelconf.kernel_wscale()
    results = bed.over_client_options(lambda: connect(bed, server, PORT, os.urandom(65536)), 3)
    assert all(r["echo_ok"] for _, r in results)
    accepted = accepted_since(srv, n_before, len(results))
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
    assert connections_made("kernel", before, after) == 24
    assert after["badcookie"] == before["badcookie"], "a real client's segment was dropped"
    assert after["completed"] == 0 and after["aborted"] == 0  # no tc hand-off in this mode


@pytest.mark.parametrize("option", ["IPV6_DSTOPTS", "IPV6_HOPOPTS"])
def test_real_connections_behind_extension_headers(protected, option):
    """A Linux client whose every segment carries an IPv6 options header (a
    sticky socket option: one PadN): its SYN is answered at XDP and its
    third ACK taken behind the header: handed off (synguard's cookies) or
    passed to the kernel's own cookie check (the kernel's), and the
    connection carries data both ways."""
    bed, _, _, cookies = protected
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    results = [bed.connect(SERVER6, PORT, sockopts=[testbed.ipv6_padding_header(option)]) for _ in range(5)]
    assert all(r["echo_ok"] for r in results)
    after = status(bed)["counters"]
    delta = {k: after[k] - before[k] for k in ("sendcookie", "badcookie", "aborted")}
    assert delta == {"sendcookie": 5, "badcookie": 0, "aborted": 0}
    assert after["exthdr"] - before["exthdr"] >= 10  # each SYN and third ACK, then data segments
    if cookies == "synguard":
        assert after["completed"] - before["completed"] == 5
    else:
        assert tcp_ext(bed, "SyncookiesRecv") - recv_before == 5


def test_first_request_right_after_connect_is_never_delayed(protected):
    """The client's third ACK and its first request often reach XDP in one
    batch; neither may be lost (a lost one costs a 200+ ms retransmission)."""
    bed, _, _, cookies = protected
    before = status(bed)["counters"]
    slow = []
    for i in range(400):
        with netns.netns(bed.client_ns):
            s = socket.socket(socket.AF_INET6 if i % 2 else socket.AF_INET)
        try:
            s.settimeout(5)
            s.connect((SERVER6 if i % 2 else SERVER4, PORT))
            t0 = time.monotonic()
            s.sendall(b"q" * 200)
            assert s.recv(200)
            if time.monotonic() - t0 > 0.15:
                slow.append(i)
        finally:
            s.close()
    after = status(bed)["counters"]
    assert slow == []
    assert connections_made(cookies, before, after) == 400
    assert after["raced"] == before["raced"]
    assert after["badcookie"] == before["badcookie"]


def test_forged_acks_are_counted_and_never_accepted(protected):
    """Dropped at XDP: neither a socket nor the kernel's cookie check (its
    SyncookiesFailed) ever sees one."""
    bed, srv, _, _ = protected
    before, n_before = status(bed)["counters"], len(srv.accepted)
    failed = tcp_ext(bed, "SyncookiesFailed")
    frames = list(forged_acks(3000, PORT)) + list(forged_acks(1000, PORT, v6=True))
    sent = bed.flood(frames, seconds=20)
    assert sent == 4000
    assert wait_until(lambda: status(bed)["counters"]["badcookie"] - before["badcookie"] >= sent, 5)
    after = status(bed)["counters"]
    assert after["badcookie"] - before["badcookie"] == sent
    assert len(srv.accepted) == n_before
    assert after["recvcookie"] == before["recvcookie"]
    assert tcp_ext(bed, "SyncookiesFailed") == failed


def test_real_clients_connect_during_a_syn_flood(protected):
    bed, _, _, cookies = protected
    before, recv_before = status(bed)["counters"], tcp_ext(bed, "SyncookiesRecv")
    frames = list(spoofed_syns(15000, PORT)) + list(spoofed_syns(5000, PORT, v6=True))
    sent, results = bed.connects_during_flood(frames, lambda s: bed.connect(s, PORT, payload=b"y" * 2000))
    assert all(r["echo_ok"] for r in results)

    def answered():
        """Every SYN answered (once, or again from its entry) or held back
        by the reflection limit."""
        c = status(bed)["counters"]
        return sum(c[k] - before[k] for k in ("sendcookie", "dupsyn", "ratelimited"))

    assert wait_until(lambda: answered() >= sent + len(results), 5)
    assert answered() == sent + len(results)
    after = status(bed)["counters"]
    assert connections_made(cookies, before, after) == len(results)
    assert after["aborted"] == before["aborted"] and after["nocookie"] == before["nocookie"]
    if cookies == "kernel":
        assert tcp_ext(bed, "SyncookiesRecv") - recv_before == len(results)


@pytest.mark.parametrize("cookies", ["synguard", "kernel"])
def test_connection_survives_attach_and_detach(cookies):
    """A connection opened before attach keeps working while synguard is
    attached and after it is detached; SIGQUIT (stop now) removes everything, and sets
    back the sysctls the mode changed."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            with netns.netns(bed.client_ns):
                import socket

                c = socket.create_connection((SERVER4, PORT), timeout=5)

            def echo(n):
                data = os.urandom(n)
                return testbed.echo(c, data) == data

            assert echo(100000)
            sysctls = on_interface(bed)["sysctls"]
            proc = bed.attach([PORT], "--mode", "native", "--no-metrics", "--cookies", cookies)
            assert echo(100000)
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            assert status(bed)["counters"]["established"] > 0
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            assert "detached" in proc.stdout.read()
            assert leftovers(bed) == NOTHING_LEFT
            assert on_interface(bed)["sysctls"] == sysctls
            assert echo(100000)
            c.close()
        finally:
            srv.close()


@pytest.mark.parametrize("cookies", ["synguard", "kernel"])
def test_detach_after_a_crash_removes_everything(cookies):
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--mode", "native", "--no-metrics", "--cookies", cookies)
            proc.kill()
            proc.wait()
            # The programs stay attached without their controller: still protected.
            assert leftovers(bed)["xdp"] and leftovers(bed)["tc"]
            assert bed.connect(SERVER6, PORT)["echo_ok"]
            r = bed.synguard_run("detach", bed.server_if, "--now")
            assert r.returncode == 0 and "removed" in r.stdout
            assert leftovers(bed) == NOTHING_LEFT
            assert bed.connect(SERVER4, PORT)["echo_ok"]
        finally:
            srv.close()


def test_generic_mode():
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--mode", "generic", "--no-metrics")
            for server in (SERVER4, SERVER6, SERVER4, SERVER6):
                assert bed.connect(server, PORT)["echo_ok"]
            st = status(bed)
            assert st["mode"] == "generic" and st["counters"]["completed"] == 4
            # detach from another process stops the running controller first
            r = bed.synguard_run("detach", bed.server_if, "--now")
            assert r.returncode == 0
            assert proc.wait(30) == 0
            assert leftovers(bed) == NOTHING_LEFT
        finally:
            srv.close()


def test_auto_takes_generic_where_the_driver_refuses_native():
    """A driver may declare native XDP and still refuse the program: veth
    does while its peer's MTU is beyond a page (vmxnet3 and virtio-net
    refuse the same way, on MTU or offloads). --mode native is refused
    with the driver's own reason; --mode auto attaches in generic mode and
    says why, and real clients connect through it."""
    with Testbed() as bed:
        netns.set_mtu(bed.client_ns, bed.client_if, 9000)
        srv = EchoServer(bed, PORT)
        try:
            r = bed.synguard_run(
                "attach", bed.server_if, "--ports", str(PORT), "--mode", "native", "--no-metrics"
            )
            assert r.returncode == 2
            assert r.stderr == (
                "synguard: error: attach failed, %s left as it was: the driver refused XDP in native mode: "
                "attach XDP: veth: Peer MTU is too large to set XDP\n" % bed.server_if
            )
            assert leftovers(bed) == NOTHING_LEFT
            proc = bed.attach([PORT], "--no-metrics")  # --mode auto
            for server in (SERVER4, SERVER6):
                assert bed.connect(server, PORT)["echo_ok"]
            st = status(bed)
            assert st["mode"] == "generic" and st["counters"]["completed"] == 2
            assert bed.synguard_run("detach", bed.server_if, "--now").returncode == 0
            assert proc.wait(30) == 0
            assert leftovers(bed) == NOTHING_LEFT
            # The log (stderr) says why generic.
            assert (
                "synguard: the driver of %s refused native XDP (veth: Peer MTU is too large to set XDP): "
                "generic mode" % bed.server_if
            ) in proc.stderr.read().splitlines()
        finally:
            srv.close()


def test_refuses_a_foreign_xdp_program_unless_forced():
    with Testbed() as bed:
        from bcc import BPF

        other = BPF(text=b"int other(struct xdp_md *ctx) { return XDP_PASS; }")
        fd = other.load_func(b"other", BPF.XDP).fd
        with netns.netns(bed.server_ns):
            netlink.xdp_attach(netlink.ifindex(bed.server_if), fd, "native")
        r = bed.synguard_run("attach", bed.server_if, "--ports", str(PORT), "--no-metrics")
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [
            "synguard: error: %s already has an XDP program (id %d, 'other'); --force replaces it"
            % (bed.server_if, leftovers(bed)["xdp"])
        ]
        assert not leftovers(bed)["tc"] and not leftovers(bed)["pins"]
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--no-metrics", "--force")
            assert libbpf.prog_name(leftovers(bed)["xdp"]) == datapath.XDP_PROG
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            second = bed.synguard_run("attach", bed.server_if, "--ports", str(PORT), "--no-metrics")
            assert second.returncode == 2
            assert "already protected by a running synguard (pid %d)" % proc.pid in second.stderr
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
        finally:
            srv.close()
            other.cleanup()


def test_testbed_leaves_nothing_behind():
    with Testbed() as bed:
        names = (bed.client_ns, bed.server_ns)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
    assert testbed.CLIENT4.startswith("198.18.")


# --- the kernel's cookies alone ------------------------------------------------


def is_synack(frame):
    """A TCP SYN-ACK (the capture also sees neighbour discovery, ARP)."""
    try:
        return packets.parse_frame(frame).flags == packets.SYN | packets.ACK
    except (ValueError, IndexError):
        return False


@kernel_only
def test_the_synack_tsval_encodes_the_clients_options(protected):
    """The low 6 bits of our TSval, as the kernel's cookie_init_timestamp
    writes them: the client's window scale (0xf: none), SACK, ECN; the rest
    the server's ms clock, never ahead of it."""
    bed, _, _, _ = protected
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


@kernel_only
def test_refusals_in_kernel_mode(protected):
    """What needs synguard's own cookies is refused, one line, exit 2."""
    bed, _, _, _ = protected
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


@kernel_only
def test_a_sysctl_changed_while_attached_is_set_back(protected):
    """tcp_timestamps back at 1 would make the kernel decode our TSval's
    options with its per-connection offset (a wrong window scale): the
    controller's next check (SIGUSR1 asks for it now) sets 2 again; detach
    still sets back the value from before attach."""
    bed, _, proc, _ = protected
    bed.sysctl(bed.server_ns, "net.ipv4.tcp_timestamps", 1)
    proc.send_signal(signal.SIGUSR1)
    assert wait_until(lambda: server_sysctls(bed)["net.ipv4.tcp_timestamps"] == "2", 5)
    assert status(bed)["sysctls_changed"] == MODE_SYSCTLS
    assert connect(bed, SERVER4, PORT, b"t" * 100000)["echo_ok"]
