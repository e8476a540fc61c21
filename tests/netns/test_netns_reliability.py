"""Reliability on the wire: a controller restart that loses nothing, key
rotation under load, key hygiene across every output."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from synguard import netlink, packets
from synguard.lab import cookie, netns
from synguard.lab.support import status, wait_until
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed, forged_acks, spoofed_syns
from synguard.maps import Maps

pytestmark = pytest.mark.netns
PORT = 8080


def nft(ns, script):
    netns.run(ns, ["nft", script], check=True)


HOLD_ACKS = (
    "add table inet hold; add chain inet hold out { type filter hook output priority 0; }; "
    "add rule inet hold out tcp dport %d tcp flags & (syn | ack) == ack drop" % PORT
)


@pytest.mark.parametrize("path", ["syncache", "cookie"])
def test_restart_adopts_the_data_path_and_a_handshake_across_it_completes(path):
    """kill -9 of the controller: the programs stay attached; the next attach
    adopts keys, syncache and counters, so a client whose SYN was answered
    before the kill (its ACK held back by nft) completes after the restart."""
    extra = ["--syncookies-only", "1"] if path == "cookie" else []
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            first = bed.attach([PORT], "--no-metrics", "--rotate-seconds", "600", *extra)
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            before = status(bed)

            nft(bed.client_ns, HOLD_ACKS)
            with netns.netns(bed.client_ns):
                c = socket.socket()
            c.settimeout(30)
            c.connect((SERVER4, PORT))  # the SYN-ACK came back; the ACK is held
            c.sendall(b"across a restart")  # held too; TCP will retransmit it

            first.kill()
            first.wait()
            with netns.netns(bed.server_ns):
                assert netlink.xdp_query(netlink.ifindex(bed.server_if))[0]  # still protected
            second = bed.attach([PORT], "--no-metrics", "--rotate-seconds", "600", *extra)
            nft(bed.client_ns, "delete table inet hold")
            assert c.recv(100) == b"across a restart"
            c.close()

            after = status(bed)
            assert after["controller_pid"] == second.pid
            assert after["key_rotations"] == before["key_rotations"]
            counter = "expanded" if path == "syncache" else "recvcookie"
            assert after["counters"][counter] == before["counters"][counter] + 1
            assert after["counters"]["completed"] == before["counters"]["completed"] + 1
            assert after["counters"]["packets"] > before["counters"]["packets"]
            second.send_signal(signal.SIGQUIT)
            assert second.wait(30) == 0
            assert "adopted the data path left attached on %s" % bed.server_if in second.stderr.read()
        finally:
            srv.close()


def test_rotation_every_second_under_a_flood_loses_no_young_handshake():
    """Keys rotate every second during a SYN and bogus-ACK flood; real clients,
    some with their ACK held for up to 0.8 s (younger than one period), all
    complete through cookies."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            bed.attach(
                [PORT], "--no-metrics", "--rotate-seconds", "1", "--syncookies-only", "1", "--ratelimit", "0"
            )
            frames = list(spoofed_syns(30000, PORT, seed=31)) + list(forged_acks(10000, PORT, seed=32))
            flood = threading.Thread(target=bed.flood, args=(frames, 20))
            t0 = time.monotonic()
            flood.start()
            ok = attempts = 0
            while time.monotonic() - t0 < 6:
                attempts += 1
                ok += bed.connect(SERVER4 if attempts % 2 else SERVER6, PORT)["echo_ok"]
            flood.join()
            # Handshakes whose ACK waits a while: each spans a rotation or not.
            for hold in (0.3, 0.6, 0.8, 0.5, 0.7):
                nft(bed.client_ns, HOLD_ACKS)
                with netns.netns(bed.client_ns):
                    c = socket.socket()
                c.settimeout(10)
                c.connect((SERVER4, PORT))
                time.sleep(hold)  # the ACK held back that long is what is tested
                nft(bed.client_ns, "delete table inet hold")
                c.sendall(b"late ack")  # carries the ACK
                attempts += 1
                ok += c.recv(100) == b"late ack"
                c.close()
            st = status(bed)
            assert ok == attempts and attempts > 20
            assert st["key_rotations"] >= 6
            assert st["counters"]["aborted"] == 0
        finally:
            srv.close()


def test_a_flooded_prefix_is_limited_and_real_clients_are_not():
    """SYNs spoofed from one /24 at full speed: that prefix gets its
    SYN-ACK budget and no more, while a real client in another prefix is
    never held up (a delayed SYN-ACK would show as a connect of 1 s+)."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            bed.attach([PORT], "--no-metrics", "--ratelimit", "1000", "--ratelimit-burst", "500")
            victim = [
                packets.tcp_frame(
                    "198.19.77.%d" % (1 + i % 250), SERVER4, 1024 + i % 60000, PORT, seq=i, flags=packets.SYN
                )
                for i in range(30000)
            ]
            flood = threading.Thread(target=bed.flood, args=(victim, 20))
            t0 = time.monotonic()
            flood.start()
            slow = []
            while flood.is_alive():
                r = bed.connect(SERVER4, PORT, timeout=5)
                assert r["echo_ok"]
                if r["connect_s"] > 0.5:
                    slow.append(r["connect_s"])
            elapsed = time.monotonic() - t0
            c = status(bed)["counters"]
            assert slow == []
            assert c["ratelimited"] > 10000
            assert c["sendcookie"] <= 500 + 1000 * elapsed + 200  # the prefix's budget, plus real clients
        finally:
            srv.close()


def test_keys_never_appear_in_any_output(tmp_path):
    """Every output a user or a scraper sees, with the keys read from the map
    while they are live: no rendering of them appears anywhere."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        outputs = []
        try:
            p = bed.attach([PORT], "--metrics-addr", "127.0.0.1:9717", "--rotate-seconds", "1")
            bed.flood(list(spoofed_syns(100, PORT, seed=41)), seconds=2)
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            keys = set()
            for _ in range(3):  # several rotations' keys
                with Maps(bed.pins()) as maps:
                    for k in maps.secrets.lookup(0).keys:
                        keys.add(cookie.key_bytes(k.k0, k.k1))
                for args in (
                    ["status", bed.server_if],
                    ["status", bed.server_if, "--json"],
                    ["list", bed.server_if],
                    ["list", bed.server_if, "--json"],
                    ["set", bed.server_if, "rexmtlimit=3"],
                    ["set", bed.server_if, "nosuch=1"],
                    ["attach", bed.server_if, "--ports", "80"],
                ):
                    r = bed.synguard_run(*args)
                    outputs += [r.stdout, r.stderr]
                with netns.netns(bed.server_ns):
                    outputs.append(urllib.request.urlopen("http://127.0.0.1:9717/metrics").read().decode())
                n = status(bed)["key_rotations"]
                assert wait_until(lambda n=n: status(bed)["key_rotations"] > n, 5)  # the next keys
            p.send_signal(signal.SIGQUIT)
            assert p.wait(30) == 0
            outputs += [p.stdout.read(), p.stderr.read()]
            r = bed.synguard_run("detach", bed.server_if, "--now")
            outputs += [r.stdout, r.stderr]
        finally:
            srv.close()
    text = "\n".join(outputs)
    assert len(keys) >= 4 and "detached" in text and "synguard_sendcookie_total" in text
    for key in keys:
        k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
        forms = [key.hex(), key.hex().upper(), str(k0), str(k1), "%x" % k0, "%x" % k1, repr(key)]
        forms += [key[i : i + 4].hex() for i in range(0, 16, 4)]  # any 4-byte run of it
        for form in forms:
            assert form not in text, "key material in output"
    assert not re.search(r"\bk[01]\b", text)


def test_no_key_files_anywhere():
    """Keys live only in the map: nothing under /run/synguard or the pins
    directory but the map and program pins and the run-state file."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            p = bed.attach([PORT], "--no-metrics")
            state = open(bed.state_path()).read()
            with Maps(bed.pins()) as maps:
                k = maps.secrets.lookup(0).keys[0]
            assert str(k.k0) not in state and cookie.key_bytes(k.k0, k.k1).hex() not in state
            assert sorted(os.listdir(bed.pins())) == sorted(
                [
                    "config",
                    "counters",
                    "handoffs",
                    "limited",
                    "listeners",
                    "prog_syncache_timer",
                    "prog_tc",
                    "prog_xdp",
                    "rexmt",
                    "secrets",
                    "syncache",
                    "syncache_buckets",
                    "syncache_state",
                    "verified",
                ]
            )
            p.send_signal(signal.SIGQUIT)
            assert p.wait(30) == 0
        finally:
            srv.close()


def test_status_and_restart_with_only_the_units_capabilities():
    """The systemd unit grants CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and
    CAP_PERFMON, not CAP_SYS_ADMIN, without which a program cannot be opened
    by id: synguard tells its programs by their pinned ids. Before that, a
    restart after a crash was refused ("already has an XDP program (id N,
    '')") and status said NOT attached."""
    caps = ",".join("+" + c for c in ("bpf", "net_admin", "net_raw", "perfmon"))
    limited = [
        "setpriv",
        "--inh-caps=-all," + caps,
        "--ambient-caps=-all," + caps,
        "--bounding-set=-all," + caps,
    ]
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)

        def synguard(*args):
            return netns.popen(
                bed.server_ns,
                limited + [sys.executable, "-m", "synguard.cli", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        try:
            first = synguard("attach", bed.server_if, "--ports", str(PORT), "--no-metrics")
            bed._procs.append(first)
            assert "protecting" in first.stdout.readline()
            first.kill()
            first.wait()
            st = synguard("status", bed.server_if)
            out, _ = st.communicate(timeout=60)
            assert st.returncode == 0 and "controller not running; protection goes on" in out
            second = synguard("attach", bed.server_if, "--ports", str(PORT), "--no-metrics")
            bed._procs.append(second)
            assert "protecting" in second.stdout.readline(), second.stderr.read()
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            second.send_signal(signal.SIGQUIT)
            assert second.wait(30) == 0
            assert "adopted the data path" in second.stderr.read()
        finally:
            srv.close()
