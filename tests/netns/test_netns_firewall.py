"""Stateful firewalls in the server namespace: handed-off connections pass
them (real clients, IPv4 and IPv6, 1 MB each way, during a bounded SYN
flood), attach makes conntrack entries exactly where the rule set needs
them, and a rule set it cannot meet is refused with the rule named."""

import os
import signal
import struct
import sys
import threading

import pytest
from synguard import host
from synguard.lab import netns
from synguard.lab.support import connections_made, load_conntrack, status, wait_until
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed, spoofed_syns

pytestmark = pytest.mark.netns
PORT = 8080
LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"

# (a): the usual stateful input chain; lo and ICMPv6 (neighbour discovery) let through.
BASE = """
table inet fw {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    meta l4proto ipv6-icmp accept
    ct state established,related accept
    ct state invalid counter drop
    %s
    tcp dport %d accept
  }
}
""" % ("%s", PORT)
HARDENING = "ct state new tcp flags & (fin|syn|rst|ack) != syn counter drop"
UFW_STYLE = [  # Debian's iptables is iptables-nft
    "-P INPUT DROP",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -m conntrack --ctstate INVALID -j DROP",
    "-A INPUT -p tcp --dport %d -j ACCEPT" % PORT,
]


def nft(bed, rules):
    netns.run(bed.server_ns, ["nft", "-f", "-"], input=rules, text=True, check=True)


def iptables(bed, rules):
    for tool in ("iptables", "ip6tables"):
        for rule in rules + (["-A INPUT -p ipv6-icmp -j ACCEPT"] if tool == "ip6tables" else []):
            netns.run(bed.server_ns, [tool, *rule.split()], check=True)


def sysctl(bed, name):
    with netns.netns(bed.server_ns):  # /proc/sys/net follows the opening thread's namespace
        return host.read_sysctl(name)[0]


def connect_during_flood(bed, n=6, size=1 << 20):
    """n real connections (alternating v4 and v6), size bytes each way,
    while 5000 spoofed SYNs flood the port."""
    frames = list(spoofed_syns(4000, PORT, seed=7)) + list(spoofed_syns(1000, PORT, v6=True, seed=8))
    flood = threading.Thread(target=bed.flood, args=(frames, 20))
    flood.start()
    try:
        return [
            bed.connect(SERVER6 if i % 2 else SERVER4, PORT, payload=b"%d" % i * size, timeout=20)
            for i in range(n)
        ]
    finally:
        flood.join()


CASES = {
    # case: (rules, loose, conntrack option, entries made?)
    "a: invalid drop, loose=1": (("nft", BASE % ""), "1", "auto", False),
    "b: invalid drop, loose=0": (("nft", BASE % ""), "0", "auto", True),
    "c: new-not-SYN drop": (("nft", BASE % HARDENING), "1", "auto", True),
    "c, noscale": (("nft", BASE % HARDENING), "1", "noscale", True),
    "d: iptables-nft, ufw style": (("iptables", UFW_STYLE), "1", "auto", False),
    "e: conntrack, no rules": ((None, None), "1", "auto", False),
}


@pytest.mark.parametrize("cookies", ["synguard", "kernel"])
@pytest.mark.parametrize("case", CASES)
def test_handed_off_connections_pass_the_firewall(case, cookies):
    """With the kernel's cookies the kernel makes the socket, and the
    conntrack entry is made the same way (tc, before netfilter sees the
    ACK)."""
    (kind, rules), loose, option, inserts = CASES[case]
    load_conntrack()  # "conntrack loaded", and its sysctls to set
    with Testbed() as bed:
        if kind == "nft":
            nft(bed, rules)
        elif kind == "iptables":
            iptables(bed, rules)
        bed.sysctl(bed.server_ns, LOOSE, loose)
        liberal_before = sysctl(bed, LIBERAL)
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--no-metrics", "--conntrack", option, "--cookies", cookies)
            before = status(bed)["counters"]
            results = connect_during_flood(bed)
            assert [r["echo_ok"] for r in results] == [True] * len(results)
            n = len(results)
            assert wait_until(lambda: connections_made(cookies, before, status(bed)["counters"]) >= n, 5)
            st = status(bed)
            after = st["counters"]
            assert connections_made(cookies, before, after) == n
            assert (after["ctinserted"] - before["ctinserted"] == len(results)) == inserts
            assert after["ctfailed"] == before["ctfailed"]
            expect_liberal = "1" if inserts and option == "auto" else liberal_before
            assert sysctl(bed, LIBERAL) == expect_liberal
            assert st["config"]["wscale_ok"] == (option != "noscale" or not inserts)
            if inserts:
                info = srv.accepted[-1]["info"]
                assert info["wscale"] == (option != "noscale")
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            assert sysctl(bed, LIBERAL) == liberal_before  # set back on detach
        finally:
            srv.close()


def test_conntrack_off_refuses_a_firewall_that_needs_entries():
    with Testbed() as bed:
        nft(bed, BASE % HARDENING)
        r = bed.synguard_run(
            "attach", bed.server_if, "--ports", str(PORT), "--no-metrics", "--conntrack", "off"
        )
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("synguard: error: the firewall drops handed-off")
        assert '"ct state new tcp flags' in lines[0] and "syn" in lines[0]  # the rule, as this nft prints it
        assert "--conntrack auto" in lines[0]
        assert bed.synguard_run("status", bed.server_if).returncode == 1  # nothing attached


def test_synproxy_on_the_port_is_passed_by_the_conntrack_entries():
    """nft's synproxy sees a handed-off ACK (ct state invalid with loose=0)
    as a cookie it did not make and drops it; with synguard's conntrack
    entry the ACK is established and goes by it."""
    with Testbed() as bed:
        nft(
            bed,
            """
table inet sp {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    meta l4proto ipv6-icmp accept
    tcp dport %d ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
    ct state established,related accept
    tcp dport %d accept
  }
}
"""
            % (PORT, PORT),
        )
        bed.sysctl(bed.server_ns, LOOSE, "0")
        srv = EchoServer(bed, PORT)
        try:
            bed.attach([PORT], "--no-metrics")
            assert bed.connect(SERVER4, PORT, payload=b"s" * (1 << 20), timeout=20)["echo_ok"]
            assert status(bed)["counters"]["ctinserted"] == 1
        finally:
            srv.close()


def test_refused_where_the_kernel_cannot_make_conntrack_entries(tmp_path):
    """A kernel with the hand-off's kfunc but none of conntrack's (a BTF that
    has only bpf_sk_assign_tcp_reqsk) and a rule set that needs entries."""
    name = b"bpf_sk_assign_tcp_reqsk"
    strings = b"\0" + name + b"\0"
    types = struct.pack("<III", 0, 13 << 24, 0)  # [1] FUNC_PROTO, no arguments
    types += struct.pack("<III", 1, 12 << 24, 1)  # [2] FUNC bpf_sk_assign_tcp_reqsk
    btf = tmp_path / "vmlinux"
    btf.write_bytes(
        struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings
    )
    with Testbed() as bed:
        nft(bed, BASE % HARDENING)
        r = netns.run(
            bed.server_ns,
            [
                sys.executable,
                "-m",
                "synguard.cli",
                "attach",
                bed.server_if,
                "--ports",
                str(PORT),
                "--no-metrics",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "SYNGUARD_VMLINUX_BTF": str(btf)},
            timeout=60,
        )
        assert r.returncode == 2
        assert r.stderr.strip().endswith(
            "making their conntrack entries is not possible: this kernel has no conntrack kfuncs "
            "(Linux >= 6.0, nf_conntrack loaded)"
        ), r.stderr


def test_a_firewall_enabled_after_attach_is_met_without_a_restart():
    """With nf_conntrack loaded at attach (a module loaded only later means
    a data path built without entries: the controller logs that it needs a
    restart)."""
    load_conntrack()
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.attach([PORT], "--no-metrics", "--rotate-seconds", "1")
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            assert status(bed)["counters"]["ctinserted"] == 0
            nft(bed, BASE % HARDENING)
            assert wait_until(lambda: status(bed)["config"]["conntrack"] is not False, 10)
            results = [bed.connect(s, PORT, payload=b"z" * (1 << 20), timeout=20) for s in (SERVER4, SERVER6)]
            assert all(r["echo_ok"] for r in results)
            assert status(bed)["counters"]["ctinserted"] == 2
            proc.send_signal(signal.SIGQUIT)
            out = proc.communicate(timeout=30)[1]
            assert "firewall changed: making the conntrack entries" in out
        finally:
            srv.close()
