"""Set-up shared by the benchmarks: the data path compiled and configured in
a private network namespace with a real dual-stack listener, so that socket
lookups under BPF_PROG_TEST_RUN see what they would on a server."""

import contextlib
import ctypes as ct
import ipaddress
import os
import secrets
import shutil
import subprocess

from synguard import libbpf, netlink, packets
from synguard.lab import netns, support
from synguard.packets import SYN

PORT = support.PORT
C4, S4, C6, S6 = "198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"
LINUX_OPTS = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0))
clear = support.clear
# xdp_synproxy's "values" map, key 0, as its userspace tool packs
# --mss4 1460 --mss6 1440 --wscale 7 --ttl 64.
REF_TCPIPOPTS = (1440 << 32) | (64 << 24) | (7 << 16) | 1460
# nftables SYNPROXY for PORT, as its documentation sets it up: the SYNs
# untracked, the handshake answered by the synproxy expression. xdp_synproxy
# answers the SYNs itself and leaves the ACKs to this.
SYNPROXY = """
table ip synproxy_bench {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    tcp dport %(port)d tcp flags syn notrack
  }
  chain in {
    type filter hook input priority filter; policy accept;
    tcp dport %(port)d ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}
""" % {"port": PORT}


@contextlib.contextmanager
def datapath(syncache_max=65536):
    """(Datapath, Maps, namespace name); the caller runs inside the namespace.
    Everything is removed afterwards."""
    with support.listening_namespace("sg-bench") as ns, support.compiled("bench", syncache_max) as (dp, maps):
        support.configure(dp, maps)  # with the keys, made once
        with netns.netns(ns):
            yield dp, maps, ns


class ReferenceObjectError(Exception):
    """The reference object cannot be loaded as xdp_synproxy: one line."""


@contextlib.contextmanager
def reference(obj):
    """The kernel selftest xdp_synproxy from its object file: the XDP
    program's fd, its maps set as its userspace tool would for PORT.
    Pinned in a private bpffs directory, removed afterwards."""
    pins = "/sys/fs/bpf/sgbench-ref-%s" % secrets.token_hex(3)
    os.makedirs(pins)
    try:
        r = subprocess.run(
            ["bpftool", "prog", "loadall", obj, pins, "pinmaps", pins + "/maps"],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            why = (r.stderr.strip().splitlines() or ["bpftool exited %d" % r.returncode])[-1]
            raise ReferenceObjectError("bpftool cannot load %s: %s" % (obj, why))
        try:
            fd = libbpf.obj_get(pins + "/syncookie_xdp")
            with (
                libbpf.PinnedMap(pins + "/maps/values", ct.c_uint32, ct.c_uint64) as values,
                libbpf.PinnedMap(pins + "/maps/allowed_ports", ct.c_uint32, ct.c_uint16) as ports,
            ):
                values.update(0, ct.c_uint64(REF_TCPIPOPTS))
                ports.update(0, ct.c_uint16(PORT))
                ports.update(1, ct.c_uint16(0))  # the list's end
        except OSError as e:
            raise ReferenceObjectError("%s is not xdp_synproxy (%s)" % (obj, e)) from None
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(pins, ignore_errors=True)


def xdp_replace(ns, ifname, fd):
    """fd as ifname's native XDP in ns, in place of whatever was there; its ifindex."""
    with netns.netns(ns):
        idx = netlink.ifindex(ifname)
        try:
            netlink.xdp_detach(idx, "native")
        except OSError:
            pass
        netlink.xdp_attach(idx, fd, "native")
    return idx


def configure(dp, maps, **syncache):
    """Config (the seed's defaults unless given) and empty syncache state."""
    # The reflection limit stays on but high: the benchmark sends from few sources.
    support.configure(dp, maps, keys=False, **{"synack_rate": 10**7, "synack_burst": 10**7, **syncache})


def syns(n, v6=False, base=0):
    """n SYN frames of distinct 4-tuples (Linux options): 60000 source ports
    per client address, then the next address."""
    client, server = (ipaddress.ip_address(C6), S6) if v6 else (ipaddress.ip_address(C4), S4)
    return [
        packets.tcp_frame(
            client + (base + i) // 60000,
            server,
            1024 + (base + i) % 60000,
            PORT,
            seq=(base + i) * 7919,
            flags=SYN,
            options=LINUX_OPTS,
        )
        for i in range(n)
    ]
