"""Set-up shared by the benchmarks: the data path compiled and configured in
a private network namespace with a real dual-stack listener, so that socket
lookups under BPF_PROG_TEST_RUN see what they would on a server."""

import contextlib
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess

from synguard import layout, loader, netns, packets
from synguard.packets import SYN
from synguard.secrets import KeyRotator

PORT = 8080
C4, S4, C6, S6 = "198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"
LINUX_OPTS = packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0))
CONFIG = dict(
    mss4=1460,
    mss6=1440,
    window=65535,
    wscale=7,
    ttl=64,
    flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS,
)


@contextlib.contextmanager
def datapath(syncache_max=65536):
    """(Datapath, Maps, namespace name); the caller runs inside the namespace.
    Everything is removed afterwards."""
    ns = "sg-bench-" + secrets.token_hex(3)
    pins = os.path.join(layout.PIN_ROOT, ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        loader.ensure_bpffs()
        dp = loader.Datapath(pins, syncache_max)
        try:
            with dp.open_maps() as maps, netns.netns(ns):
                maps.set_ports([PORT])
                KeyRotator(maps.secrets).install_initial()
                listener = socket.socket(socket.AF_INET6)
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                listener.bind(("::", PORT))
                listener.listen(16)
                try:
                    yield dp, maps, ns
                finally:
                    listener.close()
        finally:
            dp.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(pins, ignore_errors=True)


def clear(dp):
    """Empty syncache, no pause, no recent hand-offs."""
    for name in (b"handoffs", b"syncache", b"syncache_state", b"syncache_buckets", b"synack_tat"):
        dp.bpf[name].clear()


def configure(dp, maps, **syncache):
    """Config (the seed's defaults unless given) and empty syncache state."""
    # The reflection limit stays on but high: the benchmark sends from few sources.
    cfg = layout.Config(
        **{**CONFIG, **layout.SETTING_DEFAULTS, "synack_rate": 10**7, "synack_burst": 10**7, **syncache}
    )
    maps.config.update(0, cfg.derive())
    clear(dp)


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
