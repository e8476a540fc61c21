"""Set-up shared by the benchmarks: the data path compiled and configured in
a private network namespace with a real dual-stack listener, so that socket
lookups under BPF_PROG_TEST_RUN see what they would on a server."""

import contextlib
import ipaddress

from synguard import netlink, packets
from synguard.lab import netns, support
from synguard.packets import SYN

PORT = support.PORT
C4, S4, C6, S6 = "198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"
LINUX_OPTS = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0))
clear = support.clear


@contextlib.contextmanager
def datapath(syncache_max=65536):
    """(Datapath, Maps, namespace name); the caller runs inside the namespace.
    Everything is removed afterwards."""
    with support.listening_namespace("sg-bench") as ns, support.compiled("bench", syncache_max) as (dp, maps):
        support.configure(dp, maps)  # with the keys, made once
        with netns.netns(ns):
            yield dp, maps, ns


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
