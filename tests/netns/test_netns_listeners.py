"""Listeners the hand-off refuses, with real clients: an MPTCP listener
(Go's default since 1.24) answers plain TCP and MPTCP clients through the
kernel while synguard protects the port, and attach names the port."""

import signal
import socket
import struct

import pytest
from synguard.lab import netns, testbed
from synguard.lab.support import status, wait_until
from synguard.lab.testbed import IPPROTO_MPTCP, SERVER4, SERVER6, EchoServer, Testbed

pytestmark = pytest.mark.netns
PORT, PORT_MPTCP = 8080, 8082


def connect(bed, server, port, proto=0):
    with netns.netns(bed.client_ns):
        s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_STREAM, proto)
    try:
        s.settimeout(5)
        s.connect((server, port))
        data = b"m" * 100000
        return testbed.echo(s, data) == data
    finally:
        s.close()


def test_an_mptcp_listener_is_left_to_the_kernel_and_named():
    with Testbed() as bed:
        plain, mptcp = EchoServer(bed, PORT), EchoServer(bed, PORT_MPTCP, proto=IPPROTO_MPTCP)
        try:
            proc = bed.attach([PORT, PORT_MPTCP], "--no-metrics")
            for server in (SERVER4, SERVER6):
                assert connect(bed, server, PORT)
                assert connect(bed, server, PORT_MPTCP)  # plain TCP client
                assert connect(bed, server, PORT_MPTCP, IPPROTO_MPTCP)  # MPTCP client
            assert wait_until(lambda: status(bed)["counters"]["completed"] >= 2, 5)
            st = status(bed)
            c = st["counters"]
            assert c["completed"] == 2 and c["aborted"] == 0  # the plain listener's, through synguard
            assert c["mptcp"] > 0 and st["mptcp_ports"] == [PORT_MPTCP]
            proc.send_signal(signal.SIGQUIT)
            err = proc.communicate(timeout=30)[1]
            assert "port %d has an MPTCP listener" % PORT_MPTCP in err
        finally:
            plain.close()
            mptcp.close()


TCP_MD5SIG = 14


def md5_key(sock, peer, key=b"synguard-test-key"):
    """TCP_MD5SIG for peer (struct tcp_md5sig: sockaddr_storage, flags,
    prefixlen, keylen, ifindex, key[80])."""
    if sock.family == socket.AF_INET:
        addr = (
            struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_pton(socket.AF_INET, peer)
        )
    else:  # an IPv4 peer of a dual-stack socket is v4-mapped
        peer = peer if ":" in peer else "::ffff:" + peer
        addr = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0)
        addr += socket.inet_pton(socket.AF_INET6, peer)
    sig = addr.ljust(128, b"\0") + struct.pack("=BBHI", 0, 0, len(key), 0) + key.ljust(80, b"\0")
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, sig)


def test_tcp_md5_connections_are_the_kernels():
    """BGP-style TCP-MD5: XDP cannot sign, so the signed SYN goes to the
    kernel, which completes the handshake; unsigned clients of the same port
    still go through synguard."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            for client in (testbed.CLIENT4, testbed.CLIENT6):
                md5_key(srv.sock, client)
            bed.attach([PORT], "--no-metrics")
            before = status(bed)["counters"]
            for server, _client in ((SERVER4, testbed.CLIENT4), (SERVER6, testbed.CLIENT6)):
                with netns.netns(bed.client_ns):
                    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET)
                try:
                    md5_key(s, server)
                    s.settimeout(5)
                    s.connect((server, PORT))
                    assert testbed.echo(s, b"q" * 50000) == b"q" * 50000
                finally:
                    s.close()
            after = status(bed)["counters"]
            assert after["signed"] - before["signed"] == 2
            assert after["sendcookie"] == before["sendcookie"]
        finally:
            srv.close()
