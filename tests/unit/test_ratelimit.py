"""The reflection limit: replies per source prefix (GCRA), through
BPF_PROG_TEST_RUN. Spoofed SYNs from one prefix must not become a stream of
SYN-ACKs at it; other prefixes are not affected; and a client that
completes its handshakes is never limited, however fast it connects and
whoever floods from its prefix or its very address."""

import os
import time

import pytest
from conftest import reset
from model import ack_for, expected_reset, run, syn
from synguard import libbpf, packets
from synguard.packets import ACK


def verdicts(prog, frames):
    return [run(prog.xdp_fd, f)[0] for f in frames]


def from_prefix(prefix, n, v6=False, base=1000):
    """n SYNs from n hosts of one prefix ("198.51.100" or "2001:db8:1:2")."""
    if v6:
        return [syn("%s::%x" % (prefix, i + 1), "2001:db8::2", sport=base + i, options=b"") for i in range(n)]
    return [syn("%s.%d" % (prefix, i + 1), "198.18.0.2", sport=base + i, options=b"") for i in range(n)]


def one_interval_later(prog, interval_ns):
    """Every prefix's budget as one interval later: each theoretical arrival
    time moved back by it. A real sleep would give back as many intervals
    as the machine's load let pass."""
    tat = prog.bpf[b"reply_tat"]
    for bucket, t in list(tat.items_lookup_batch()):
        if t:
            tat[tat.Key(bucket)] = tat.Leaf(t - interval_ns)


def test_burst_then_rate_per_ipv4_prefix(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=1, synack_burst=5, syncookies_only=1)
    before = maps.read_counters()
    got = verdicts(prog, from_prefix("198.19.7", 8))
    assert got == [libbpf.XDP_TX] * 5 + [libbpf.XDP_DROP] * 3
    assert verdicts(prog, from_prefix("198.19.8", 2)) == [libbpf.XDP_TX] * 2  # another /24: its own budget
    one_interval_later(prog, 10**9)  # one more
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


# --- what a real client must never suffer ----------------------------------


def handshake(prog, frame):
    """SYN, then the ACK of its SYN-ACK: the verdicts."""
    verdict, synack = run(prog.xdp_fd, frame)
    if verdict != libbpf.XDP_TX:
        return verdict, None
    return verdict, run(prog.xdp_fd, ack_for(synack))[0]


def test_a_client_that_completes_its_handshakes_is_never_limited(dp):
    """Each completed handshake gives its SYN-ACK back: one client opening
    connections back to back (here 10x its prefix's burst) never meets the
    limit, and its neighbours keep their whole budget."""
    prog, maps = dp
    reset(prog, maps, synack_rate=10, synack_burst=10, syncookies_only=1)
    before = maps.read_counters()
    for i in range(100):
        assert handshake(prog, syn("198.19.20.1", "198.18.0.2", sport=10000 + i)) == (
            libbpf.XDP_TX,
            libbpf.XDP_PASS,
        )
    after = maps.read_counters()
    assert after["ratelimited"] == before["ratelimited"]
    assert after["recvcookie"] - before["recvcookie"] == 100
    neighbours = from_prefix("198.19.20", 10, base=30000)[1:] + [
        syn("198.19.20.200", "198.18.0.2", options=b"")
    ]
    assert verdicts(prog, neighbours) == [libbpf.XDP_TX] * 10


@pytest.mark.parametrize("spoofed", ["its prefix", "its own address"])
def test_a_flood_spoofed_from_a_verified_client_does_not_lock_it_out(dp, spoofed):
    """A source that completed a handshake is answered beyond its prefix's
    budget (counted verified); the spoofed rest of the prefix is not."""
    prog, maps = dp
    reset(prog, maps, synack_rate=5, synack_burst=5, syncookies_only=1)
    assert handshake(prog, syn("198.19.21.7", "198.18.0.2", sport=999)) == (libbpf.XDP_TX, libbpf.XDP_PASS)
    if spoofed == "its prefix":
        flood = from_prefix("198.19.21", 50, base=20000)
    else:
        flood = [syn("198.19.21.7", "198.18.0.2", sport=20000 + i, options=b"") for i in range(50)]
    got = verdicts(prog, flood)
    before = maps.read_counters()
    for i in range(20):  # the client, during the flood
        assert handshake(prog, syn("198.19.21.7", "198.18.0.2", sport=40000 + i)) == (
            libbpf.XDP_TX,
            libbpf.XDP_PASS,
        )
    after = maps.read_counters()
    if spoofed == "its prefix":  # the .7 among them is the client's address
        assert got.count(libbpf.XDP_TX) <= 5 + 1
    else:
        assert got == [libbpf.XDP_TX] * 50
    # beyond the budget it was answered as verified (each completed
    # handshake then gave its SYN-ACK back, so not every SYN needed that)
    assert after["verified"] > before["verified"]
    assert after["ratelimited"] == before["ratelimited"]


@pytest.mark.parametrize("verified_s", [1, 0], ids=["verifiedtime 1", "verifiedtime 0: never verified"])
def test_a_verified_source_is_forgotten_after_verifiedtime(dp, verified_s):
    prog, maps = dp
    reset(prog, maps, synack_rate=2, synack_burst=2, syncookies_only=1, verified_s=verified_s)
    handshake(prog, syn("198.19.22.1", "198.18.0.2", sport=1))
    verdicts(prog, from_prefix("198.19.22", 5, base=100))

    def again(sport):
        return run(prog.xdp_fd, syn("198.19.22.1", "198.18.0.2", sport=sport, options=b""))[0]

    if verified_s:
        assert again(2) == libbpf.XDP_TX
        time.sleep(verified_s + 0.1)  # the verification's age is what is tested
        verdicts(prog, from_prefix("198.19.22", 5, base=200))  # spend what the sleep gave back
    assert again(3) == libbpf.XDP_DROP


def test_the_latest_limited_sources_are_sampled(dp):
    """The controller's log line names the heaviest prefixes from these."""
    prog, maps = dp
    reset(prog, maps, synack_rate=1, synack_burst=1, syncookies_only=1)
    verdicts(prog, from_prefix("198.19.24", 4))
    rings = maps.limited.lookup(0)
    seen = sorted(str(r.src[i].ip()) for r in rings for i in range(min(r.n, 64)))
    assert seen == ["198.19.24.2", "198.19.24.3", "198.19.24.4"]


def test_retransmissions_spend_the_prefix_budget(dp):
    """The syncache's retransmissions are the one reply nobody asked for:
    beyond the prefix's budget they are skipped (rexmtlimited) and the
    entry ages as if they had gone."""
    from synguard.syncache import Syncache
    from test_syncache import Wire, entry

    prog, maps = dp
    reset(prog, maps, synack_rate=1, synack_burst=2, rexmt_ms=10)
    frames = from_prefix("198.19.25", 2)
    assert verdicts(prog, frames) == [libbpf.XDP_TX] * 2
    due = max(entry(maps, f).rxt_ns for f in frames)
    wire = Wire()
    before = maps.read_counters()
    assert Syncache(maps, prog.timer_fd, wire=wire).tick(due) == (0, 0)
    after = maps.read_counters()
    assert wire.frames == [] and after["rexmtlimited"] - before["rexmtlimited"] == 2
    assert all(entry(maps, f).rxmits == 1 for f in frames)


# --- RSTs for what nobody knows --------------------------------------------


def bogus_acks(prefix, n, base=5000):
    return [
        packets.tcp_frame(
            "%s.%d" % (prefix, 1 + i % 250), "198.18.0.2", base + i, 8080, seq=i, ack=7, flags=ACK
        )
        for i in range(n)
    ]


@pytest.fixture
def one_cpu():
    """The test on one CPU: the global RST budget is per CPU."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    yield os.cpu_count()
    os.sched_setaffinity(0, saved)


def test_rsts_stay_within_the_global_budget(dp, one_cpu):
    """rstlimit RSTs a second in all, a CPU's share at once; then drops."""
    prog, maps = dp
    reset(prog, maps, rst_rate=4 * one_cpu, syncookies_only=1)
    before = maps.read_counters()
    got = verdicts(prog, bogus_acks("198.19.30", 10))
    assert got == [libbpf.XDP_TX] * 4 + [libbpf.XDP_DROP] * 6
    after = maps.read_counters()
    assert after["rstsent"] - before["rstsent"] == 4
    assert after["rstlimited"] - before["rstlimited"] == 6
    assert after["badcookie"] - before["badcookie"] == 10


def test_rsts_spend_the_prefix_budget_unless_verified(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=3, synack_burst=3, syncookies_only=1)
    assert handshake(prog, syn("198.19.31.9", "198.18.0.2", sport=1)) == (libbpf.XDP_TX, libbpf.XDP_PASS)
    got = verdicts(prog, bogus_acks("198.19.31", 8))
    assert got == [libbpf.XDP_TX] * 3 + [libbpf.XDP_DROP] * 5
    forgotten = packets.tcp_frame("198.19.31.9", "198.18.0.2", 4444, 8080, seq=1, ack=2, flags=ACK)
    assert run(prog.xdp_fd, forgotten) == (libbpf.XDP_TX, expected_reset(forgotten, maps))
    assert verdicts(prog, bogus_acks("198.19.32", 3)) == [libbpf.XDP_TX] * 3  # another prefix


def test_no_rsts_with_rstlimit_0(dp):
    prog, maps = dp
    reset(prog, maps, rst_rate=0, syncookies_only=1)
    before = maps.read_counters()
    assert verdicts(prog, bogus_acks("198.19.33", 3)) == [libbpf.XDP_DROP] * 3
    after = maps.read_counters()
    assert after["badcookie"] - before["badcookie"] == 3
    assert after["rstsent"] == before["rstsent"] and after["rstlimited"] == before["rstlimited"]
