"""The seed's syncache rules, each by name, through BPF_PROG_TEST_RUN, and the
user-space timer (without sending: the retransmissions on a wire are in
test_netns_syncache.py)."""

import ctypes
import time

import pytest
from conftest import reset
from model import (
    CLIENT4,
    CLIENT6,
    SERVER4,
    SERVER6,
    ack_for,
    entry,
    expected_synack,
    flow_key,
    handed_off,
    handoff,
    run,
    syn,
)
from synguard import layout, libbpf, packets
from synguard.packets import ACK, FIN, RST, SYN, tcp_options
from synguard.syncache import Syncache

# A client whose MSS (1410) and window scale (5) are not in the cookie's tables.
ODD = tcp_options(mss=1410, wscale=5, sack=True, ts=(1000, 0))


def delta(maps, before):
    now = maps.read_counters()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


def state(maps):
    return maps.syncache_state.lookup(0)


class Wire:
    """Stands in for the timer's wire.PacketSocket: keeps what it sends."""

    def __init__(self):
        self.frames = []

    def send_batch(self, frames):
        self.frames += [ctypes.string_at(addr, length) for addr, length in frames]
        return {}


def retransmitted(prog, maps, frame):
    """What the timer sends for frame's entry once it is due."""
    wire = Wire()
    timer = Syncache(maps, prog.timer_fd, wire=wire)
    assert timer.tick(entry(maps, frame).rxt_ns) == (1, 0)
    return wire.frames[0]


def test_syncache_add_keeps_the_exact_connection_state(dp):
    prog, maps = dp
    frame = syn(options=ODD, seq=4242)
    t0 = time.monotonic_ns()
    verdict, out = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    sa = packets.parse_frame(out)
    e = entry(maps, frame)
    assert (e.irs, e.iss) == (4242, sa.seq)
    assert (e.peer_mss, e.snd_wscale, e.rcv_wscale) == (1410, 5, 7)  # exact, not the tables' 1400 and 4
    assert e.flags == layout.SCF_WINSCALE | layout.SCF_TIMESTAMP | layout.SCF_SACK
    assert (e.ts, e.ts_recent) == sa.options["ts"]
    assert (e.mss, e.wnd, e.ttl, e.rxmits) == (1410, 65535, 64, 0)
    assert (e.l3_off, bytes(e.frame[: e.frame_len])) == (14, out)
    h = expected_synack(frame, maps, sa.options["ts"][0])[1]
    assert e.bucket == (h >> 44) & 511
    assert t0 <= e.added_ns <= time.monotonic_ns()
    assert e.rxt_ns - e.added_ns == 1_000_000_000
    assert state(maps).entries == 1
    assert maps.syncache_buckets.lookup(e.bucket).value == 1


@pytest.mark.parametrize(
    "frame",
    [
        syn(options=ODD),
        syn(CLIENT6, SERVER6, options=ODD),
        syn(options=b""),
        syn(vlans=(5,)),
        syn(CLIENT6, SERVER6, vlans=(10, 20), options=tcp_options(mss=1300, sack=True)),
        syn(options=tcp_options(mss=1460, wscale=9, ts=(1, 0))),
    ],
    ids=["v4", "v6", "v4 no options", "v4 VLAN", "v6 QinQ", "v4 no SACK"],
)
def test_retransmission_is_byte_identical_to_the_first_synack(dp, frame):
    prog, maps = dp
    verdict, out = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    assert retransmitted(prog, maps, frame) == out


def test_retransmission_keeps_the_ecn_setup(dp):
    prog, maps = dp
    reset(prog, maps, flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS | layout.CF_ECN)
    frame = packets.tcp_frame(
        CLIENT4, SERVER4, 40000, 8080, seq=9, flags=SYN | packets.ECE | packets.CWR, options=ODD
    )
    verdict, out = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX and packets.parse_frame(out).flags & packets.ECE
    assert entry(maps, frame).flags & layout.SCF_ECN
    assert retransmitted(prog, maps, frame) == out


def test_dupsyn_answers_with_the_same_synack(dp):
    prog, maps = dp
    frame = syn(options=ODD)
    first = run(prog.xdp_fd, frame)[1]
    key = flow_key(frame)
    e = entry(maps, frame)
    e.rxmits = 2
    maps.syncache.update(key, e)
    before = maps.read_counters()
    verdict, again = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX and again == first  # same ISS, same everything
    assert delta(maps, before) == {"packets": 1, "dupsyn": 1}
    e = entry(maps, frame)
    assert e.rxmits == 0  # retransmit counter reset
    assert state(maps).entries == 1


def test_dupsyn_takes_up_the_new_timestamp_or_drops_timestamps(dp):
    prog, maps = dp
    run(prog.xdp_fd, syn(options=ODD))
    out = run(prog.xdp_fd, syn(options=tcp_options(mss=1410, wscale=5, sack=True, ts=(2000, 0))))[1]
    assert packets.parse_frame(out).options["ts"][1] == 2000
    out = run(prog.xdp_fd, syn(options=tcp_options(mss=1410, wscale=5, sack=True)))[1]
    assert "ts" not in packets.parse_frame(out).options
    assert not entry(maps, syn()).flags & layout.SCF_TIMESTAMP
    assert retransmitted(prog, maps, syn()) == out  # what the last SYN got


def test_syncache_expand_hands_off_the_exact_options(dp):
    prog, maps = dp
    frame = syn(options=ODD)
    synack = run(prog.xdp_fd, frame)[1]
    ack = ack_for(synack)
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, ack)
    assert verdict == libbpf.XDP_PASS
    assert out == ack and handed_off(maps, ack)
    a = handoff(maps, ack).attrs
    assert (a.mss, a.wscale_ok, a.snd_wscale, a.rcv_wscale, a.sack_ok) == (1410, 1, 5, 7, 1)
    assert (a.tstamp_ok, a.rcv_tsval, a.rcv_tsecr) == (1, 778, packets.parse_frame(synack).options["ts"][0])
    assert delta(maps, before) == {"packets": 1, "expanded": 1}
    assert entry(maps, frame) is None and state(maps).entries == 0


def _mismatch(synack, kind):
    a = packets.parse_frame(ack_for(synack))
    sa = packets.parse_frame(synack)
    seq, ack, opts = a.seq, a.ack, a.raw_options
    if kind == "ack":
        ack += 1
    elif kind == "seq":
        seq += 1448  # the third ACK lost, a later segment first
    elif kind == "tsecr":
        opts = tcp_options(ts=(778, sa.options["ts"][0] + 1))
    elif kind == "no timestamp":
        opts = b""
    return packets.tcp_frame(
        a.src, a.dst, a.sport, a.dport, seq=seq, ack=ack, flags=ACK, options=opts, payload=b"x" * 10
    )


@pytest.mark.parametrize(
    "kind,then",
    [("ack", "badcookie"), ("seq", "badcookie"), ("tsecr", "recvcookie"), ("no timestamp", "recvcookie")],
)
def test_syncache_badack_drops_the_entry_and_the_cookie_decides(dp, kind, then):
    """A mismatch removes the entry (syncache_badack); the ISS is a cookie,
    so an ACK whose only fault is its timestamp still completes."""
    prog, maps = dp
    frame = syn(options=ODD)
    synack = run(prog.xdp_fd, frame)[1]
    before = maps.read_counters()
    verdict, _ = run(prog.xdp_fd, _mismatch(synack, kind))
    assert verdict == (libbpf.XDP_PASS if then == "recvcookie" else libbpf.XDP_TX)  # TX: an RST
    assert delta(maps, before) == {
        "packets": 1,
        "badack": 1,
        then: 1,
        **({"rstsent": 1} if then == "badcookie" else {}),
    }
    assert entry(maps, frame) is None and state(maps).entries == 0


def _rst(frame, seq, flags=RST):
    s = packets.parse_frame(frame)
    return packets.tcp_frame(s.src, s.dst, s.sport, s.dport, seq=seq & 0xFFFFFFFF, flags=flags)


@pytest.mark.parametrize(
    "seq_offset,flags,removed",
    [
        (1, RST, True),  # what a client sends to refuse our SYN-ACK
        (0, RST, True),  # left edge: IRS
        (65535, RST, True),  # right edge: IRS + WND
        (65536, RST, False),
        (-1, RST, False),
        (1, RST | ACK, False),  # RFC 793 p. 65: a RST for our SYN-ACK carries no ACK
        (1, RST | SYN, False),
        (1, RST | FIN, False),
    ],
)
def test_syncache_chkrst(dp, seq_offset, flags, removed):
    prog, maps = dp
    frame = syn(seq=1000)
    run(prog.xdp_fd, frame)
    before = maps.read_counters()
    assert run(prog.xdp_fd, _rst(frame, 1000 + seq_offset, flags))[0] == libbpf.XDP_PASS
    assert delta(maps, before) == {"packets": 1, "reset" if removed else "badrst": 1}
    assert (entry(maps, frame) is None) == removed


@pytest.mark.parametrize("client,server", [(CLIENT4, SERVER4), (CLIENT6, SERVER6)], ids=["icmp", "icmpv6"])
def test_syncache_unreach(dp, client, server):
    """The first unreachable marks the entry; one after the retransmissions
    ran out removes it; a bogus one (wrong seq) and path-MTU ones change
    nothing."""
    prog, maps = dp
    frame = syn(client, server)
    synack = run(prog.xdp_fd, frame)[1]
    key = flow_key(frame)
    sa = packets.parse_frame(synack)
    wrong = packets.tcp_frame(sa.src, sa.dst, sa.sport, sa.dport, seq=sa.seq + 1, ack=sa.ack, flags=SYN | ACK)
    bogus = [packets.icmp_unreachable(wrong)]
    if client == CLIENT4:
        bogus.append(packets.icmp_unreachable(synack, code=4))  # fragmentation needed: path MTU, not unreach
    for frame_ in bogus:
        run(prog.xdp_fd, frame_)
    assert not entry(maps, frame).flags & layout.SCF_UNREACH

    before = maps.read_counters()
    icmp = packets.icmp_unreachable(synack)
    assert run(prog.xdp_fd, icmp) == (libbpf.XDP_PASS, icmp)  # the kernel sees it too
    assert entry(maps, frame).flags & layout.SCF_UNREACH
    run(prog.xdp_fd, icmp)  # a second one before the retransmissions ran out
    assert entry(maps, frame) is not None
    again = packets.parse_frame(retransmitted(prog, maps, frame))
    if client == CLIENT4:  # as the seed: no DF once the path said unreachable
        assert not again.ip_header[6] & 0x40 and again.ip_csum_ok and again.tcp_csum_ok
    assert again.seq == sa.seq
    e = entry(maps, frame)
    e.rxmits = 3  # rexmtlimit
    maps.syncache.update(key, e)
    run(prog.xdp_fd, icmp)
    assert entry(maps, frame) is None
    assert delta(maps, before) == {"packets": 3, "passed": 3, "unreach": 1, "retransmitted": 1}


def test_cachelimit_then_cookies(dp):
    """zonefail: past cachelimit a SYN gets its cookie SYN-ACK, no entry."""
    prog, maps = dp
    reset(prog, maps, cachelimit=3, pause_ms=0)
    before = maps.read_counters()
    for i in range(5):
        assert run(prog.xdp_fd, syn(sport=1000 + i))[0] == libbpf.XDP_TX
    assert delta(maps, before) == {"packets": 5, "sendcookie": 5, "added": 3, "zonefail": 2}
    assert state(maps).entries == 3 and len(maps.syncache.items()) == 3


def test_bucketlimit(dp):
    """bucketoverflow: at most bucketlimit entries per bucket; the bucket of
    each SYN is known from the Python cookie reference."""
    prog, maps = dp
    reset(prog, maps, bucketlimit=1, pause_ms=0)
    before = maps.read_counters()
    seen, expect_over = set(), 0
    for i in range(200):
        frame = syn(sport=2000 + i)
        synack = run(prog.xdp_fd, frame)[1]
        h = expected_synack(frame, maps, packets.parse_frame(synack).options["ts"][0])[1]
        bucket = (h >> 44) & 511
        expect_over += bucket in seen
        seen.add(bucket)
    assert expect_over > 0  # 200 SYNs into 512 buckets: collisions are certain
    assert delta(maps, before) == {
        "packets": 200,
        "sendcookie": 200,
        "added": len(seen),
        "bucketoverflow": expect_over,
    }
    assert all(maps.syncache_buckets.lookup(b).value == 1 for b in seen)


def test_syncookies_only_keeps_no_entries(cookies_only):
    prog, maps = cookies_only
    before = maps.read_counters()
    synack = run(prog.xdp_fd, syn())[1]
    assert entry(maps, syn()) is None
    assert run(prog.xdp_fd, ack_for(synack))[0] == libbpf.XDP_PASS
    assert delta(maps, before) == {"packets": 2, "sendcookie": 1, "recvcookie": 1}


def test_syncookies_0_drops_beyond_the_limit_and_refuses_cookies(dp):
    prog, maps = dp
    reset(prog, maps, syncookies=0, cachelimit=2, pause_ms=0)
    before = maps.read_counters()
    verdicts = [run(prog.xdp_fd, syn(sport=3000 + i))[0] for i in range(4)]
    assert verdicts == [libbpf.XDP_TX] * 2 + [libbpf.XDP_DROP] * 2
    assert delta(maps, before) == {"packets": 4, "sendcookie": 2, "added": 2, "zonefail": 2, "dropped": 2}
    # An ACK without an entry is refused even if its cookie is valid.
    reset(prog, maps, syncookies_only=1)
    synack = run(prog.xdp_fd, syn(sport=4000))[1]
    reset(prog, maps, syncookies=0)
    assert run(prog.xdp_fd, ack_for(synack))[0] == libbpf.XDP_TX  # nobody knows it: an RST
    reset(prog, maps, syncookies=0, rst_rate=0)
    assert run(prog.xdp_fd, ack_for(synack))[0] == libbpf.XDP_DROP


def test_pause_engages_doubles_and_expires(dp):
    prog, maps = dp
    reset(prog, maps, cachelimit=1, pause_ms=200)
    run(prog.xdp_fd, syn(sport=1))  # the one entry
    t = time.monotonic_ns()
    run(prog.xdp_fd, syn(sport=2))  # overflow: pause
    st = state(maps)
    assert (st.pauses, st.backoff) == (1, 0)
    assert 150e6 < st.pause_until_ns - t < 250e6
    before = maps.read_counters()
    assert Syncache(maps, prog.timer_fd).tick() == (0, 1)  # paused: flushed
    run(prog.xdp_fd, syn(sport=3))  # room again, but paused: cookie only
    assert delta(maps, before) == {"packets": 1, "sendcookie": 1, "flushed": 1}
    time.sleep((st.pause_until_ns - time.monotonic_ns()) / 1e9 + 0.01)  # the pause's end is tested
    run(prog.xdp_fd, syn(sport=4))  # resumed: cached
    assert entry(maps, syn(sport=4)) is not None
    t = time.monotonic_ns()
    run(prog.xdp_fd, syn(sport=5))  # overflow again within one pause length: twice as long
    st = state(maps)
    assert (st.pauses, st.backoff) == (2, 1)
    assert 350e6 < st.pause_until_ns - t < 450e6


def test_pause_backoff_is_capped(dp):
    prog, maps = dp
    reset(prog, maps, cachelimit=1, pause_ms=100)
    run(prog.xdp_fd, syn(sport=1))
    for i in range(9):
        run(prog.xdp_fd, syn(sport=100 + i))  # overflow: a pause
        # Its end moved to 25 ms ago, so the next SYN overflows again within
        # one pause length. More than two ticks (20 ms at HZ=100) ago: a SYN
        # tells a pause on the coarse clock, up to two ticks behind.
        st = state(maps)
        st.pause_until_ns = time.monotonic_ns() - 25_000_000
        maps.syncache_state.update(0, st)
    assert state(maps).backoff == 6
    assert state(maps).pauses == 9


def test_timer_retransmits_with_backoff_then_expires(dp):
    """syncache_timer on a simulated clock: retransmissions at +1, +3, +7 s
    (base 1 s: x1, x2, x4, x8), stale at +15 s."""
    prog, maps = dp
    frame = syn()
    run(prog.xdp_fd, frame)
    t0 = entry(maps, frame).added_ns
    timer = Syncache(maps, prog.timer_fd)  # no interface: nothing is sent
    before = maps.read_counters()
    schedule = []
    for ms in range(0, 16000, 50):
        resent, stale = timer.tick(t0 + ms * 1_000_000)
        if resent or stale:
            schedule.append((ms, resent, stale))
    assert schedule == [(1000, 1, 0), (3000, 1, 0), (7000, 1, 0), (15000, 0, 1)]
    assert delta(maps, before) == {"retransmitted": 3, "stale": 1}
    assert entry(maps, frame) is None and state(maps).entries == 0


def test_timer_keeps_counts_exact(dp):
    prog, maps = dp
    frames = [syn(sport=5000 + i) for i in range(100)]
    for f in frames:
        run(prog.xdp_fd, f)
    assert state(maps).entries == 100
    for f in frames:  # as if their retransmissions had run out
        e = entry(maps, f)
        e.rxmits = 3
        maps.syncache.update(flow_key(f), e)
    timer = Syncache(maps, prog.timer_fd)
    later = time.monotonic_ns() + 60 * 10**9
    before = maps.read_counters()
    assert timer.tick(later) == (0, 100)
    assert timer.tick(later) == (0, 0)  # already gone: nothing counted twice
    assert delta(maps, before) == {"stale": 100}
    assert state(maps).entries == 0
    assert all(maps.syncache_buckets.lookup(b).value == 0 for b in range(512))


def test_a_pause_flushes_the_syncache(dp):
    """FreeBSD's timer removes every entry while paused, since cookies
    carry those connections."""
    prog, maps = dp
    reset(prog, maps, cachelimit=150, pause_ms=60000)
    for i in range(151):  # the 151st overflows: paused
        run(prog.xdp_fd, syn(sport=6000 + i))
    assert state(maps).pause_until_ns > time.monotonic_ns()
    before = maps.read_counters()
    assert Syncache(maps, prog.timer_fd).tick() == (0, 150)
    assert state(maps).entries == 0
    assert delta(maps, before) == {"flushed": 150}
    before = maps.read_counters()
    assert run(prog.xdp_fd, syn(sport=6000))[0] == libbpf.XDP_TX
    # Paused: no lookup, no entry, a cookie.
    assert delta(maps, before) == {"packets": 1, "sendcookie": 1}
    assert state(maps).entries == 0


def test_without_cookies_the_syncache_never_pauses(dp):
    """With syncookies=0 the entries are all there is: an overflow drops
    that SYN, never all of them for a pause, and nothing is flushed."""
    prog, maps = dp
    reset(prog, maps, cachelimit=150, pause_ms=60000, syncookies=0)
    for i in range(151):
        run(prog.xdp_fd, syn(sport=6000 + i))
    assert state(maps).pause_until_ns == 0 and state(maps).pauses == 0
    assert Syncache(maps, prog.timer_fd).tick() == (0, 0)
    assert state(maps).entries == 150
    before = maps.read_counters()
    assert run(prog.xdp_fd, syn(sport=6000))[0] == libbpf.XDP_TX  # the entry answers
    assert delta(maps, before) == {"packets": 1, "dupsyn": 1}


def test_the_timer_reads_no_entry_before_one_can_be_due(dp):
    """After a scan, entries made later are due a base interval after it
    at the earliest: until then a tick reads the state, not the entries."""
    prog, maps = dp
    run(prog.xdp_fd, syn())
    t0 = entry(maps, syn()).added_ns
    timer = Syncache(maps, prog.timer_fd)
    runs = []
    real = timer._run
    timer._run = lambda *a: runs.append(a[0]) or real(*a)
    timer.tick(t0)
    run(prog.xdp_fd, syn(sport=7))  # made after the scan
    timer.tick(t0 + 500_000_000)
    assert runs == [t0]
    assert timer.tick(entry(maps, syn()).rxt_ns) == (1, 0) and len(runs) == 2


class RefusingWire:
    """A wire whose link refuses every frame, as one that is down."""

    def send_batch(self, frames):
        return {i: "Network is down" for i in range(len(frames))}


def test_a_refused_retransmission_is_one_line_and_not_counted(dp, caplog):
    prog, maps = dp
    for i in range(3):
        run(prog.xdp_fd, syn(sport=9000 + i))
    timer = Syncache(maps, prog.timer_fd, wire=RefusingWire())
    before = maps.read_counters()
    due = max(entry(maps, syn(sport=9000 + i)).rxt_ns for i in range(3))
    with caplog.at_level("WARNING", logger="synguard"):
        assert timer.tick(due) == (0, 0)
    assert [r.getMessage() for r in caplog.records] == ["cannot retransmit 3 SYN-ACKs: Network is down"]
    assert "retransmitted" not in delta(maps, before)
    assert all(entry(maps, syn(sport=9000 + i)).rxmits == 1 for i in range(3))  # its turn was spent
