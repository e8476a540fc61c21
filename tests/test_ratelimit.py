"""The reflection limit: SYN-ACKs per source prefix (GCRA), through
BPF_PROG_TEST_RUN. Spoofed SYNs from one prefix must not become a stream of
SYN-ACKs at it; other prefixes are not affected."""

import time

from conftest import reset
from model import run, syn
from synguard import libbpf, packets


def verdicts(prog, frames):
    return [run(prog.xdp_fd, f)[0] for f in frames]


def from_prefix(prefix, n, v6=False, base=1000):
    """n SYNs from n hosts of one prefix ("198.51.100" or "2001:db8:1:2")."""
    if v6:
        return [syn("%s::%x" % (prefix, i + 1), "2001:db8::2", sport=base + i, options=b"") for i in range(n)]
    return [syn("%s.%d" % (prefix, i + 1), "198.18.0.2", sport=base + i, options=b"") for i in range(n)]


def test_burst_then_rate_per_ipv4_prefix(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=20, synack_burst=5, syncookies_only=1)
    before = maps.read_counters()
    got = verdicts(prog, from_prefix("198.19.7", 8))
    assert got == [libbpf.XDP_TX] * 5 + [libbpf.XDP_DROP] * 3
    assert verdicts(prog, from_prefix("198.19.8", 2)) == [libbpf.XDP_TX] * 2  # another /24: its own budget
    time.sleep(1 / 20 + 0.01)  # one interval later: one more
    assert verdicts(prog, from_prefix("198.19.7", 2, base=2000)) == [libbpf.XDP_TX, libbpf.XDP_DROP]
    after = maps.read_counters()
    assert after["ratelimited"] - before["ratelimited"] == 4
    assert after["sendcookie"] - before["sendcookie"] == 8


def test_ipv6_counts_by_64(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=10, synack_burst=3, syncookies_only=1)
    assert verdicts(prog, from_prefix("2001:db8:5:1", 4, v6=True)) == [libbpf.XDP_TX] * 3 + [libbpf.XDP_DROP]
    assert verdicts(prog, from_prefix("2001:db8:5:2", 3, v6=True)) == [libbpf.XDP_TX] * 3


def test_prefix_length_32_counts_each_host(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=10, synack_burst=2, prefix4=32, syncookies_only=1)
    assert verdicts(prog, from_prefix("198.19.9", 4)) == [libbpf.XDP_TX] * 4
    same_host = [syn("198.19.9.1", "198.18.0.2", sport=3000 + i, options=b"") for i in range(3)]
    assert verdicts(prog, same_host) == [
        libbpf.XDP_TX,
        libbpf.XDP_DROP,
        libbpf.XDP_DROP,
    ]  # one left in its burst


def test_duplicate_syns_count_too(dp):
    """A SYN answered from its syncache entry is a SYN-ACK as well."""
    prog, maps = dp
    reset(prog, maps, synack_rate=10, synack_burst=3)
    frame = syn("198.19.10.1", "198.18.0.2", options=b"")
    assert verdicts(prog, [frame] * 5) == [libbpf.XDP_TX] * 3 + [libbpf.XDP_DROP] * 2


def test_limit_off(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=0, syncookies_only=1)
    assert set(verdicts(prog, from_prefix("198.19.11", 250))) == {libbpf.XDP_TX}


def test_rate_holds_over_time(dp):
    """Over 0.5 s a prefix gets burst + rate x time SYN-ACKs, not more."""
    prog, maps = dp
    reset(prog, maps, synack_rate=200, synack_burst=10, syncookies_only=1)
    t0 = time.monotonic()
    sent = 0
    for i in range(100000):
        if time.monotonic() - t0 > 0.5:
            break
        f = packets.tcp_frame(
            "198.19.12.%d" % (1 + i % 250), "198.18.0.2", 10000 + i % 50000, 8080, seq=i, flags=packets.SYN
        )
        sent += run(prog.xdp_fd, f)[0] == libbpf.XDP_TX
    elapsed = time.monotonic() - t0
    assert sent <= 10 + 200 * elapsed + 2
    assert sent >= 10 + 200 * elapsed * 0.8


M64 = (1 << 64) - 1


def fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def bucket(cfg, v4_prefix):
    """The bucket of an IPv4 /24 (replica of synack_allowed's hash)."""
    a = int.from_bytes(bytes(map(int, v4_prefix.split("."))) + b"\0", "big") << 32
    return fmix64(fmix64(a ^ cfg.prefix_seed) ^ 0) & 0xFFFF


def test_prefixes_spread_over_the_buckets(dp):
    """Prefixes whose low bits are zero (every /24) must not crowd into a few
    buckets: a flooded prefix would then starve the others."""
    prog, maps = dp
    reset(prog, maps, synack_rate=5, synack_burst=2, syncookies_only=1)
    cfg = maps.config.lookup(0)
    cfg.prefix_seed = 0x0123456789ABCDEF
    maps.config.update(0, cfg)
    prefixes = ["198.19.%d" % i for i in range(256)] + [
        "10.%d.%d" % (i, j) for i in range(4) for j in range(64)
    ]
    assert len({bucket(cfg, p) for p in prefixes}) >= len(prefixes) - 3
    # The program agrees: flood one prefix; every prefix in another bucket still gets its SYN-ACKs.
    verdicts(prog, from_prefix("198.19.0", 10))
    others = [p for p in prefixes[1:60] if bucket(cfg, p) != bucket(cfg, "198.19.0")]
    assert all(run(prog.xdp_fd, syn(p + ".9", "198.18.0.2", options=b""))[0] == libbpf.XDP_TX for p in others)
