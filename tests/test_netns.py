"""Integration: synguard attached in native XDP mode to a veth in a server
namespace, real kernel TCP clients in a client namespace (controller/lab/testbed.py).
"""

import os
import signal
import subprocess
import time

import pytest
from synguard import datapath, kernelconf, layout, libbpf, netlink
from synguard.lab import cookie, netns, testbed
from synguard.lab.support import on_interface, status
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed, forged_acks, spoofed_syns
from synguard.maps import Maps

pytestmark = pytest.mark.netns
PORT = 8080


def server_keys(bed):
    with Maps(bed.pins()) as maps:
        s = maps.secrets.lookup(0)
        return [cookie.key_bytes(k.k0, k.k1) for k in s.keys]


def leftovers(bed):
    """What synguard could have left on the server side."""
    on = on_interface(bed)
    return {"xdp": on["xdp"][0], "tc": on["tc"], **{k: on[k] for k in ("clsact", "pins", "run files")}}


NOTHING_LEFT = {"xdp": 0, "tc": 0, "clsact": False, "pins": False, "run files": []}


@pytest.fixture(scope="module")
def protected():
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        proc = bed.attach([PORT], "--mode", "native", "--no-metrics", "--rotate-seconds", "600")
        try:
            yield bed, srv
        finally:
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            srv.close()


def test_attached_natively(protected):
    bed, _ = protected
    st = status(bed)
    assert st["protected"] and st["mode"] == "native" and st["ports"] == [PORT]
    assert st["controller_running"]
    assert 0 <= st["key_age_seconds"] < 600


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_real_connections_through_cookies(protected, family):
    """8 option combinations (client sysctls) x 4 connections, 64 KB each
    way: every accepted socket's ISN is our cookie and carries the options
    the cookie encoded."""
    bed, srv = protected
    server = SERVER4 if family == "v4" else SERVER6
    before = status(bed)["counters"]
    n_before = len(srv.accepted)
    keys = server_keys(bed)
    cfg = status(bed)["config"]
    results = bed.over_client_options(
        lambda: bed.connect(server, PORT, payload=os.urandom(65536), inspect=True), 4
    )

    assert all(r["echo_ok"] for _, r in results)
    time.sleep(0.2)  # the accept thread records the last ones
    accepted = {a["peer"][1]: a for a in srv.accepted[n_before:]}
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


@pytest.mark.parametrize("option", ["IPV6_DSTOPTS", "IPV6_HOPOPTS"])
def test_real_connections_behind_extension_headers(protected, option):
    """A Linux client whose every segment carries an IPv6 options header (a
    sticky socket option: one PadN): its SYN is answered at XDP, its third
    ACK matched (entry or cookie) and handed off behind the header, the
    kernel takes the request socket, and the connection carries data both
    ways."""
    bed, _ = protected
    before = status(bed)["counters"]
    results = [bed.connect(SERVER6, PORT, sockopts=[testbed.ipv6_padding_header(option)]) for _ in range(5)]
    assert all(r["echo_ok"] for r in results)
    after = status(bed)["counters"]
    delta = {k: after[k] - before[k] for k in ("sendcookie", "completed", "badcookie", "aborted")}
    assert delta == {"sendcookie": 5, "completed": 5, "badcookie": 0, "aborted": 0}
    assert after["exthdr"] - before["exthdr"] >= 10  # each SYN and third ACK, then data segments


def test_first_request_right_after_connect_is_never_delayed(protected):
    """The client's third ACK and its first request often reach XDP in one
    batch; neither may be lost (a lost one costs a 200+ ms retransmission)."""
    import socket

    bed, _ = protected
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
    assert after["completed"] - before["completed"] == 400
    assert after["raced"] == before["raced"]
    assert after["badcookie"] == before["badcookie"]


def test_forged_acks_are_counted_and_never_accepted(protected):
    bed, srv = protected
    before, n_before = status(bed)["counters"], len(srv.accepted)
    frames = list(forged_acks(3000, PORT)) + list(forged_acks(1000, PORT, v6=True))
    sent = bed.flood(frames, seconds=20)
    assert sent == 4000
    time.sleep(0.3)
    after = status(bed)["counters"]
    assert after["badcookie"] - before["badcookie"] == sent
    assert len(srv.accepted) == n_before
    assert after["recvcookie"] == before["recvcookie"]


def test_real_clients_connect_during_a_syn_flood(protected):
    bed, srv = protected
    before = status(bed)["counters"]
    frames = list(spoofed_syns(15000, PORT)) + list(spoofed_syns(5000, PORT, v6=True))
    sent, results = bed.connects_during_flood(frames, lambda s: bed.connect(s, PORT, payload=b"y" * 2000))
    time.sleep(0.3)
    after = status(bed)["counters"]
    assert all(r["echo_ok"] for r in results)
    # Every SYN was answered or held back by the reflection limit.
    answered = after["sendcookie"] - before["sendcookie"] + after["ratelimited"] - before["ratelimited"]
    assert answered == sent + len(results)
    assert after["completed"] - before["completed"] == len(results)
    assert after["aborted"] == before["aborted"]


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
