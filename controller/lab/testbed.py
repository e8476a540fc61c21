"""A two-namespace test bed: a real client, a real server, a veth between.

    client netns                         server netns
    sgXXXXXXc 198.18.0.1, 2001:db8::1 == sgXXXXXXs 198.18.0.2, 2001:db8::2
    (XDP_PASS stub: a veth only delivers     (synguard attaches here; a real
     XDP_TX frames to a peer that has an      listener accepts and echoes)
     XDP program of its own)

Used by `synguard-demo`, the integration tests and the benchmarks. Traffic
stays inside the two namespaces, on 198.18.0.0/15 and 2001:db8::/32, and
every flood is bounded in packets and seconds. down() removes everything,
also after a failure (use it as a context manager).
"""

import contextlib
import errno
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from .. import host, layout, netlink, packets
from ..runstate import RUN_DIR, pin_dir, state_path
from . import netns

CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8::2"
SPOOF_NET4 = ipaddress.ip_network("198.19.0.0/16")
SPOOF_NET6 = ipaddress.ip_network("2001:db8:5::/48")  # many /64s, as spoofed floods look

IPPROTO_MPTCP = 262
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_REPAIR_OFF_NO_WP = -1
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4


def ipv6_padding_header(option="IPV6_DSTOPTS"):
    """The setsockopt arguments that make a client socket send every
    segment behind an IPv6 options header of one PadN (option: IPV6_DSTOPTS
    or IPV6_HOPOPTS; the kernel fills in the next header)."""
    return (socket.IPPROTO_IPV6, getattr(socket, option), bytes([0, 0, 1, 4, 0, 0, 0, 0]))


def xdp_stub(ns, ifname, verdict="XDP_PASS"):
    """A one-line native XDP program on a veth: a veth delivers XDP_TX frames
    only to a peer that runs XDP too. Returns the BPF object (cleanup() it)."""
    from bcc import BPF

    stub = BPF(text=b"int stub(struct xdp_md *ctx) { return %s; }" % verdict.encode())
    with netns.netns(ns):
        netlink.xdp_attach(netlink.ifindex(ifname), stub.load_func(b"stub", BPF.XDP).fd, "native")
    return stub


def tcp_seqs(sock):
    """(next seq to send, next seq expected) of a connected socket, read in
    TCP_REPAIR mode (root only) and left again without a window probe."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd = sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv = sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    return snd & 0xFFFFFFFF, rcv & 0xFFFFFFFF


def echo(sock, payload):
    """Send payload to an echo server and read as much back (less if the
    connection ends first); returns what came back. Sending runs beside
    the reading: a payload larger than both ends' buffers would otherwise
    stall the echo until its socket times out (seen with 1 MB under QEMU)."""
    sender = threading.Thread(target=_send_all, args=(sock, payload), daemon=True)
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sender.join()
    return bytes(got)


def _send_all(sock, payload):
    try:
        sock.sendall(payload)
    except OSError:
        pass  # the reader sees the connection end


def tcp_info(sock):
    """The negotiated options of a connected socket, from TCP_INFO."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    options, wscales = raw[5], raw[6]
    snd_mss, rcv_mss = struct.unpack_from("II", raw, 16)
    return {
        "timestamps": bool(options & TCPI_OPT_TIMESTAMPS),
        "sack": bool(options & TCPI_OPT_SACK),
        "wscale": bool(options & TCPI_OPT_WSCALE),
        "snd_wscale": wscales & 0xF,
        "rcv_wscale": wscales >> 4,
        "snd_mss": snd_mss,
        "rcv_mss": rcv_mss,
    }


class EchoServer:
    """A dual-stack listener in the server namespace that echoes what it
    reads. For each accepted connection it records the peer, the server's
    ISS (via TCP_REPAIR, before sending anything) and TCP_INFO; proto
    IPPROTO_MPTCP makes an MPTCP listener (whose sockets record the peer
    only: MPTCP has neither)."""

    def __init__(self, bed, port, ns=None, proto=0):
        self.port = port
        self.accepted = []
        self._stop = False
        self.mptcp = proto == IPPROTO_MPTCP
        with netns.netns(ns or bed.server_ns):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", port))
        self.sock.listen(1024)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                conn, peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            if self.mptcp:
                self.accepted.append({"peer": peer})
            else:
                snd, _ = tcp_seqs(conn)
                self.accepted.append({"peer": peer, "iss": (snd - 1) & 0xFFFFFFFF, "info": tcp_info(conn)})
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


class _Bed:
    """Namespaces made by up() and removed by down(), also after a failure."""

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()

    _procs = ()

    def _remove(self, namespaces):
        """Kill what ran in the namespaces and delete them, then what synguard
        may have left for them (pins, run state) and the XDP stubs."""
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        ids = [netns.ns_id(ns) for ns in namespaces if os.path.exists(netns.ns_path(ns))]
        for ns in namespaces:
            netns.remove(ns)
        # What synguard keeps per namespace, whatever interface it protected.
        for nsid in ids:
            shutil.rmtree(os.path.join(layout.PIN_ROOT, str(nsid)), ignore_errors=True)
            shutil.rmtree(os.path.join(RUN_DIR, str(nsid)), ignore_errors=True)
        for stub in self._stubs:
            stub.cleanup()
        self._stubs = []


class Testbed(_Bed):
    __test__ = False  # not a pytest class, despite the name

    def __init__(self, tag=None, attacker=False):
        """attacker: also an attacker namespace on a link of its own to the
        server (198.18.10.0/24), for floods that share nothing with the
        real client's link; the server routes 198.19.0.0/16 to it."""
        tag = tag or secrets.token_hex(3)
        self.client_ns, self.server_ns = "sg-%s-c" % tag, "sg-%s-s" % tag
        self.client_if, self.server_if = "sg%sc" % tag, "sg%ss" % tag
        self.attacker = attacker
        self.attacker_ns, self.attacker_if, self.attack_if = "sg-%s-a" % tag, "sg%sa" % tag, "sg%st" % tag
        self._stubs = []
        self._procs = []

    def up(self):
        netns.create(self.client_ns)
        netns.create(self.server_ns)
        netns.veth(
            self.server_ns,
            self.server_if,
            self.client_ns,
            self.client_if,
            "02:00:00:00:00:02",
            "02:00:00:00:00:01",
        )
        for ns, ifname, v4, v6 in (
            (self.client_ns, self.client_if, CLIENT4, CLIENT6),
            (self.server_ns, self.server_if, SERVER4, SERVER6),
        ):
            netns.address(ns, ifname, v4 + "/24")
            netns.address(ns, ifname, v6 + "/64")
        self._stubs.append(xdp_stub(self.client_ns, self.client_if))
        if self.attacker:
            netns.create(self.attacker_ns)
            netns.veth(self.server_ns, self.attack_if, self.attacker_ns, self.attacker_if)
            netns.address(self.attacker_ns, self.attacker_if, "198.18.10.1/24")
            netns.address(self.server_ns, self.attack_if, "198.18.10.2/24")
            netns.route(self.server_ns, str(SPOOF_NET4), "198.18.10.1")
            # The attacker drops everything that arrives, ARP requests too:
            # the server must know its MAC beforehand to answer in the kernel.
            mac = netns.link_attr(self.attacker_ns, self.attacker_if, "IFLA_ADDRESS")
            netns.neigh(self.server_ns, self.attack_if, "198.18.10.1", mac)
            # The attacker has no use for the SYN-ACKs: drop them on arrival.
            self._stubs.append(xdp_stub(self.attacker_ns, self.attacker_if, "XDP_DROP"))

    def down(self):
        self._remove((self.client_ns, self.server_ns, self.attacker_ns))

    def pins(self, ifname=None):
        """Where synguard pins for an interface of the server namespace."""
        return pin_dir(ifname or self.server_if, netns.ns_id(self.server_ns))

    def state_path(self, ifname=None):
        return state_path(ifname or self.server_if, netns.ns_id(self.server_ns))

    # --- processes in the namespaces ---------------------------------------

    def synguard(self, *args, **kw):
        """Start `synguard ARGS` in the server namespace (its own Popen)."""
        p = netns.popen(self.server_ns, [sys.executable, "-m", "synguard.cli"] + list(args), **kw)
        self._procs.append(p)
        return p

    def synguard_run(self, *args):
        return netns.run(
            self.server_ns,
            [sys.executable, "-m", "synguard.cli"] + list(args),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def attach(self, ports, *extra, timeout=60, iface=None, env=None):
        """Start `synguard attach` (on the client link unless iface says
        otherwise; ports None: from its --config) and wait for its
        "protecting" (or "monitoring") line."""
        p = self.synguard(
            "attach",
            iface or self.server_if,
            *(("--ports", ",".join(map(str, ports))) if ports else ()),
            *extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if "protecting" in line or "monitoring" in line or not line:
                break
        if "protecting" not in line and "monitoring" not in line:
            p.kill()
            raise RuntimeError("synguard attach failed: %s" % p.stderr.read())
        return p

    def sysctl(self, ns, name, value):
        with netns.netns(ns):  # /proc/sys/net follows the opening thread's namespace
            host.write_sysctl(name, str(value))

    # --- real clients -----------------------------------------------------

    def connect(self, server, port, payload=b"x" * 1000, timeout=5.0, inspect=False, sockopts=()):
        """One real connection from the client namespace: send payload, read
        it back. Returns a dict with the time to connect and, with inspect,
        the client's view of the sequence numbers (TCP_REPAIR). sockopts:
        (level, option, value) set on the socket first."""
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with netns.netns(self.client_ns):
            s = socket.socket(family, socket.SOCK_STREAM)
        try:
            for opt in sockopts:
                s.setsockopt(*opt)
            s.settimeout(timeout)
            t0 = time.monotonic()
            s.connect((server, port))
            result = {"connect_s": time.monotonic() - t0, "local": s.getsockname()}
            if inspect:
                snd, rcv = tcp_seqs(s)
                result["isn"] = (snd - 1) & 0xFFFFFFFF  # nothing sent yet
                result["server_iss"] = (rcv - 1) & 0xFFFFFFFF
            result["echo_ok"] = echo(s, payload) == payload
            return result
        finally:
            s.close()

    CLIENT_OPTIONS = ("net.ipv4.tcp_timestamps", "net.ipv4.tcp_sack", "net.ipv4.tcp_window_scaling")

    def over_client_options(self, connect, per_combination):
        """connect() per_combination times for each of the 8 combinations of
        the client's timestamps, SACK and window scaling (its sysctls, set
        back to 1 afterwards): [((ts, sack, ws), what connect returned)]."""
        results = []
        try:
            for combo in range(8):
                ts, sack, ws = (combo >> 2) & 1, (combo >> 1) & 1, combo & 1
                for name, value in zip(self.CLIENT_OPTIONS, (ts, sack, ws)):
                    self.sysctl(self.client_ns, name, value)
                results += [((ts, sack, ws), connect()) for _ in range(per_combination)]
        finally:
            for name in self.CLIENT_OPTIONS:
                self.sysctl(self.client_ns, name, 1)
        return results

    def connects_during_flood(self, frames, connect, least=20, most=200):
        """flood(frames) in a thread while connect(server) runs, v4 and v6
        in turn, until the flood ends (at least `least`, at most `most`
        times): (frames sent, [what connect returned])."""
        sent = []
        flood = threading.Thread(target=lambda: sent.append(self.flood(frames, seconds=20)))
        flood.start()
        results = []
        while (flood.is_alive() or len(results) < least) and len(results) < most:
            results.append(connect(SERVER4 if len(results) % 2 == 0 else SERVER6))
        flood.join()
        return sent[0], results

    # --- bounded floods from spoofed sources -------------------------------

    def flood(self, frames, seconds):
        """Send frames (bytes) from the client veth as fast as one Python
        thread can, until all are sent or `seconds` pass. Returns the number
        sent (a full queue is waited out, not skipped)."""
        with netns.netns(self.client_ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        sent = 0
        try:
            s.bind((self.client_if, 0))
            deadline = time.monotonic() + seconds
            for frame in frames:
                while True:
                    try:
                        s.send(frame)
                        break
                    except OSError as e:
                        if e.errno != errno.ENOBUFS or time.monotonic() > deadline:
                            raise
                        time.sleep(0.0005)
                sent += 1
                if sent % 256 == 0 and time.monotonic() > deadline:
                    break
        finally:
            s.close()
        return sent


@contextlib.contextmanager
def protected(ports, *extra, echo_port=None):
    """A Testbed with an EchoServer on echo_port (ports[0] unless given) and
    synguard attached for ports (extra: attach's arguments): yields (bed,
    echo server, controller). At the end SIGQUIT (stop now) must end the
    controller cleanly."""
    with Testbed() as bed:
        srv = EchoServer(bed, echo_port or ports[0])
        try:
            proc = bed.attach(ports, *extra)
            try:
                yield bed, srv, proc
            finally:
                proc.send_signal(signal.SIGQUIT)
                code = proc.wait(30)
                if code != 0:
                    raise RuntimeError("synguard attach ended with %d: %s" % (code, proc.stderr.read()))
        finally:
            srv.close()


class FleetBed(_Bed):
    """Two servers behind one address, and a router that sends each client's
    SYN to one and everything after it to the other, as an ECMP rehash or a
    changed load-balancer path does mid-handshake.

        client 198.18.0.1 --- router 198.18.0.254
                               |-- (SYN)   198.18.2.1 --- A 198.18.2.2, service 198.18.1.1
                               '-- (rest)  198.18.3.1 --- B 198.18.3.2, service 198.18.1.1

    The router marks SYNs (nft) and routes marked packets to A (policy
    routing), the rest to B. synguard attaches to A's and B's veths.
    """

    SERVICE = "198.18.1.1"

    def __init__(self, tag=None):
        tag = tag or secrets.token_hex(2)
        self.ns = {r: "sgf-%s-%s" % (tag, r) for r in ("c", "r", "a", "b")}
        self.ifs = {r: "sgf%s%s" % (tag, r) for r in ("c", "rc", "ra", "rb", "a", "b")}
        self.client_ns, self.client_if = self.ns["c"], self.ifs["c"]
        self._stubs = []
        self._procs = []

    def up(self):
        ns, ifs = self.ns, self.ifs
        for name in ns.values():
            netns.create(name)
        for a, b, a_ns, b_ns in (("c", "rc", "c", "r"), ("ra", "a", "r", "a"), ("rb", "b", "r", "b")):
            netns.veth(ns[a_ns], ifs[a], ns[b_ns], ifs[b])
        for ifname, owner, addr in (
            ("c", "c", "198.18.0.1/24"),
            ("rc", "r", "198.18.0.254/24"),
            ("ra", "r", "198.18.2.1/30"),
            ("a", "a", "198.18.2.2/30"),
            ("rb", "r", "198.18.3.1/30"),
            ("b", "b", "198.18.3.2/30"),
        ):
            netns.address(ns[owner], ifs[ifname], addr)
        netns.route(ns["c"], "default", "198.18.0.254")
        for server, gw in (("a", "198.18.2.1"), ("b", "198.18.3.1")):
            netns.address(ns[server], ifs[server], self.SERVICE + "/32")
            netns.route(ns[server], "default", gw)
        netns.route(ns["r"], self.SERVICE + "/32", "198.18.3.2")
        netns.route(ns["r"], self.SERVICE + "/32", "198.18.2.2", table=100)
        netns.rule_fwmark(ns["r"], 1, 100)
        with netns.netns(ns["r"]):
            for name in (
                "net.ipv4.ip_forward",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.default.rp_filter",
            ):
                host.write_sysctl(name, "1" if name.endswith("forward") else "0")
            for ifname in ("rc", "ra", "rb"):  # the return path is not the way in
                host.write_sysctl("net.ipv4.conf.%s.rp_filter" % ifs[ifname], "0")
        netns.run(
            ns["r"],
            [
                "nft",
                "add table inet fleet; "
                "add chain inet fleet pre { type filter hook prerouting priority -150; }; "
                "add rule inet fleet pre ip daddr %s tcp flags & (syn | ack) == syn meta mark set 1"
                % self.SERVICE,
            ],
            check=True,
        )
        # XDP_TX on A's and B's veths reaches the router only if its ends run XDP.
        for ifname in ("ra", "rb"):
            self._stubs.append(xdp_stub(ns["r"], ifs[ifname]))

    def down(self):
        self._remove(list(self.ns.values()))

    def attach(self, server, ports, *extra, timeout=60):
        """`synguard attach` on server ("a" or "b"); returns its Popen once protecting."""
        p = netns.popen(
            self.ns[server],
            [
                sys.executable,
                "-m",
                "synguard.cli",
                "attach",
                self.ifs[server],
                "--ports",
                ",".join(map(str, ports)),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(p)
        line = p.stdout.readline()
        if "protecting" not in line:
            p.kill()
            raise RuntimeError("synguard attach failed: %s" % p.stderr.read())
        return p

    def synguard_run(self, server, *args):
        return netns.run(
            self.ns[server],
            [sys.executable, "-m", "synguard.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )


class LanBed(_Bed):
    """Three hosts on one LAN, as the end-to-end suite (synguard.e2e) and
    the Vagrant VMs have them: a bridge in a namespace of its own joins the
    server's, the client's and the attacker's veths.

        client 198.18.50.11 --+
                              br (sg-TAG-lan) --- server 198.18.50.10
        attacker 198.18.50.12 +
    """

    SERVER, CLIENT, ATTACKER = "198.18.50.10", "198.18.50.11", "198.18.50.12"

    def __init__(self, tag=None):
        tag = tag or secrets.token_hex(2)
        self.lan_ns = "sg-%s-lan" % tag
        self.ns = {h: "sg-%s-%s" % (tag, h) for h in ("server", "client", "attacker")}
        self.ifs = {h: "sg%s%s" % (tag, h[0]) for h in self.ns}  # in the host's namespace
        self.ports = {h: "sg%s%sp" % (tag, h[0]) for h in self.ns}  # the bridge's end
        self._stubs = []

    def up(self):
        netns.create(self.lan_ns)
        netns.bridge(self.lan_ns, "br0")
        for host_, addr in (("server", self.SERVER), ("client", self.CLIENT), ("attacker", self.ATTACKER)):
            ns = self.ns[host_]
            netns.create(ns)
            netns.veth(ns, self.ifs[host_], self.lan_ns, self.ports[host_])
            netns.up(self.lan_ns, self.ports[host_], master="br0")
            netns.address(ns, self.ifs[host_], addr + "/24")
        # synguard's XDP_TX on the server's veth reaches the bridge only if
        # the bridge's end runs XDP too (see the module comment).
        self._stubs.append(xdp_stub(self.lan_ns, self.ports["server"]))

    def down(self):
        self._remove(list(self.ns.values()) + [self.lan_ns])


class Capture:
    """Frames arriving at the client veth (after its XDP stub), with their
    arrival times: what the server side put on the wire."""

    def __init__(self, bed):
        with netns.netns(bed.client_ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((bed.client_if, 0))
        self.sock.settimeout(0.05)

    def collect(self, seconds, match=lambda frame: True):
        """[(monotonic time, frame)] of matching frames for `seconds`."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_OUTGOING and match(frame):
                got.append((time.monotonic(), frame))
        return got

    def close(self):
        self.sock.close()


def _spoofed(count, port, v6, seed, segment):
    """count frames from random spoofed sources in the benchmarking ranges;
    segment(rng) gives each one's TCP fields beyond ports and seq."""
    rng = random.Random(seed)
    net, dst = (SPOOF_NET6, SERVER6) if v6 else (SPOOF_NET4, SERVER4)
    for _ in range(count):
        src = net[rng.randrange(1, net.num_addresses - 1)]
        yield packets.tcp_frame(
            str(src), dst, rng.randrange(1024, 65536), port, seq=rng.getrandbits(32), **segment(rng)
        )


# trafgen's description of one spoofed frame: a SYN or an ACK from a random
# source in SPOOF_NET4, random source port, sequence and (ACKs) acknowledgment
# numbers, checksums by trafgen.
TRAFGEN_SPOOFED = """
{
  %(dst_mac)s,  %(src_mac)s,  0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), const16(0x4000), 64, 6, csumip(14, 33),
  198, 19, drnd(2),  %(dst)s,
  drnd(2), const16(%(port)d), drnd(4), %(ack)s, 0x50, %(flags)s, const16(64240), csumtcp(14, 34), const16(0),
}
"""


def trafgen_spoofed(path, kind, dst_mac, src_mac, dst, port):
    """Write trafgen's configuration for a flood of spoofed SYNs (kind
    "syn") or ACKs ("ack") to dst:port (dotted IPv4); MACs as aa:bb:..."""

    def mac(m):
        return ", ".join("0x" + b for b in m.split(":"))

    with open(path, "w") as f:
        f.write(
            TRAFGEN_SPOOFED
            % {
                "dst_mac": mac(dst_mac),
                "src_mac": mac(src_mac),
                "dst": ", ".join(dst.split(".")),
                "port": port,
                "flags": "0x02" if kind == "syn" else "0x10",
                "ack": "const32(0)" if kind == "syn" else "drnd(4)",
            }
        )


def spoofed_syns(count, port, v6=False, seed=1):
    """count SYN frames from random spoofed sources, Linux-style options."""
    opts = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(1, 0))
    return _spoofed(count, port, v6, seed, lambda rng: {"flags": packets.SYN, "options": opts})


def forged_acks(count, port, v6=False, seed=2):
    """count ACK frames with random sequence and ack numbers (no cookie)."""
    return _spoofed(count, port, v6, seed, lambda rng: {"ack": rng.getrandbits(32), "flags": packets.ACK})
