"""The XDP program built for the kernel's cookies (--cookies kernel),
through BPF_PROG_TEST_RUN on crafted frames in the unit namespace, whose
listener the kernel mints the cookies for (tcp_syncookies=2,
tcp_timestamps=2 there, as attach sets them).

Each SYN of test_xdp.py's table must come back as the exact SYN-ACK
tests/model.py computes around the kernel's ISS and our TSval, the TSval
carrying the options in its low 6 bits; the ISS must be a cookie the
kernel's own check accepts (bpf_tcp_check_syncookie), and nothing else.

Every test runs twice: built as for this kernel, and as for one before
5.18/5.11 (datapath.COMPAT: frames copied from packet pointers, the precise
clock) with a bcc before 0.20 (plain maps, which the loader pins itself),
which is all of those kernels that can be tried here."""

import os
import time

import pytest
from conftest import PORT, reset
from model import CLIENT4, SERVER4, ack_for, expected_kernel_synack, expected_reset, run, syn
from synguard import datapath, host, layout, libbpf, packets
from synguard.lab import netns, support
from synguard.packets import ACK, CWR, ECE, SYN, tcp_options
from synguard.syncache import Syncache
from test_syncache import entry, retransmitted
from test_xdp import SYN_CASES, counters_delta


@pytest.fixture(scope="module", params=["helpers", "compat"])
def kernel_datapath(unit_ns, request):
    with netns.netns(unit_ns):
        saved = {n: host.read_sysctl(n)[0] for n in ("net.ipv4.tcp_syncookies", "net.ipv4.tcp_timestamps")}
        for name in saved:
            host.write_sysctl(name, "2")
    try:
        with pytest.MonkeyPatch.context() as mp:
            compat = ()
            if request.param == "compat":
                compat = tuple(datapath.COMPAT.values())
                mp.setattr(datapath, "bcc_makes_pins", lambda: False)
            with support.compiled("unit-kc", cookies="kernel", defines=compat) as (dp, maps):
                # Pinned by the loader: the tests below reach the programs'
                # maps through these pins only.
                assert sorted(os.listdir(dp.pins)) == sorted(datapath.maps.declared())
                yield dp, maps
    finally:
        with netns.netns(unit_ns):
            for name, value in saved.items():
                host.write_sysctl(name, value)


@pytest.fixture
def kdp(kernel_datapath, unit_ns):
    prog, maps = kernel_datapath
    reset(prog, maps)
    with netns.netns(unit_ns):
        yield prog, maps


@pytest.mark.parametrize("name", SYN_CASES)
def test_syn_becomes_the_exact_kernel_cookie_synack(kdp, name):
    prog, maps = kdp
    frame = SYN_CASES[name]
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, frame)
    now_ms = time.monotonic_ns() // 1000000
    assert verdict == libbpf.XDP_TX
    seg = packets.parse_frame(out)
    assert seg.ip_csum_ok and seg.tcp_csum_ok
    tsval = seg.options.get("ts", (0, 0))[0]
    expected, options = expected_kernel_synack(frame, maps, seg.seq, tsval)
    assert out == expected
    if "ts" in seg.options:
        assert tsval & 0x3F == options
        assert now_ms - 1000 < tsval <= now_ms, "the kernel's ms clock, never ahead"
    assert counters_delta(maps, before) == {"packets": 1, "sendcookie": 1, "added": 1}
    # The kernel takes the ISS for its cookie: the ACK goes up to it.
    support.clear(prog)  # no entry: the cookie decides
    assert run(prog.xdp_fd, ack_for(out))[0] == libbpf.XDP_PASS
    assert counters_delta(maps, before)["recvcookie"] == 1


def test_ack_matching_an_entry_goes_up_and_takes_the_entry(kdp):
    prog, maps = kdp
    _, synack = run(prog.xdp_fd, syn())
    before = maps.read_counters()
    assert run(prog.xdp_fd, ack_for(synack))[0] == libbpf.XDP_PASS
    assert counters_delta(maps, before) == {"packets": 1, "expanded": 1}
    assert maps.syncache_state.lookup(0).entries == 0


@pytest.mark.parametrize(
    "what,change",
    [
        ("ack one off", lambda s: {"ack": (s.ack + 1) & 0xFFFFFFFF}),
        ("another client ISN", lambda s: {"seq": (s.seq + 7) & 0xFFFFFFFF}),
        ("another source port", lambda s: {"sport": s.sport + 1}),
        ("random ack", lambda s: {"ack": 0x5A5A5A5A}),
    ],
)
def test_acks_the_kernel_did_not_mint_get_an_rst(kdp, what, change):
    prog, maps = kdp
    reset(prog, maps, syncookies_only=1)  # no entries: the cookie alone decides
    _, synack = run(prog.xdp_fd, syn())
    a = packets.parse_frame(ack_for(synack))
    fields = {"sport": a.sport, "seq": a.seq, "ack": a.ack, **change(a)}
    bogus = packets.tcp_frame(
        a.src, a.dst, fields["sport"], a.dport, seq=fields["seq"], ack=fields["ack"], flags=ACK
    )
    before = maps.read_counters()
    assert run(prog.xdp_fd, bogus) == (libbpf.XDP_TX, expected_reset(bogus, maps))
    assert counters_delta(maps, before) == {"packets": 1, "badcookie": 1, "rstsent": 1}


def test_without_timestamps_only_the_mss_is_offered(kdp):
    prog, maps = kdp
    frame = syn(options=tcp_options(mss=1460, wscale=7, sack=True))
    _, out = run(prog.xdp_fd, frame)
    assert set(packets.parse_frame(out).options) - {"order"} == {"mss"}


def test_ecn_rides_in_the_tsval(kdp):
    prog, maps = kdp
    reset(prog, maps, flags=support.CONFIG["flags"] | 0x10)  # net.ipv4.tcp_ecn on
    frame = packets.tcp_frame(
        CLIENT4,
        SERVER4,
        40001,
        PORT,
        seq=9,
        flags=SYN | ECE | CWR,
        options=tcp_options(mss=1460, wscale=7, sack=True, ts=(5, 0)),
    )
    _, out = run(prog.xdp_fd, frame)
    seg = packets.parse_frame(out)
    assert seg.flags & (ECE | CWR) == ECE and seg.options["ts"][0] & 0x3F == 7 | 0x10 | 0x20


def test_a_syn_the_kernel_mints_no_cookie_for_goes_to_it(kdp, unit_ns):
    """tcp_syncookies=1 and a SYN queue that is not full: the helper
    declines, and the kernel answers the SYN itself."""
    prog, maps = kdp
    host.write_sysctl("net.ipv4.tcp_syncookies", "1")
    try:
        before = maps.read_counters()
        assert run(prog.xdp_fd, syn())[0] == libbpf.XDP_PASS
        assert counters_delta(maps, before) == {"packets": 1, "nocookie": 1}
    finally:
        host.write_sysctl("net.ipv4.tcp_syncookies", "2")


def test_the_timer_retransmits_the_synack_as_sent(kdp):
    prog, maps = kdp
    frame = syn()
    _, synack = run(prog.xdp_fd, frame)
    assert retransmitted(prog, maps, frame) == synack


def test_an_unreachable_for_our_synack_marks_its_entry(kdp):
    prog, maps = kdp
    frame = syn()
    _, synack = run(prog.xdp_fd, frame)
    icmp = packets.icmp_unreachable(synack)
    assert run(prog.xdp_fd, icmp) == (libbpf.XDP_PASS, icmp)
    assert entry(maps, frame).flags & layout.SCF_UNREACH


def test_entries_spread_over_the_buckets(kdp):
    """The kernel's cookie picks an entry's bucket (it is a keyed hash), so
    1000 connection attempts fit bucketlimit 30 over 512 buckets."""
    prog, maps = kdp
    before = maps.read_counters()
    for i in range(1000):
        assert run(prog.xdp_fd, syn(sport=20000 + i, seq=i * 7919))[0] == libbpf.XDP_TX
    d = counters_delta(maps, before)
    assert d["added"] == 1000 and "bucketoverflow" not in d
    assert max(maps.syncache_buckets.lookup(b).value for b in range(512)) < 30


def test_the_timer_takes_every_key_whatever_one_run_takes(kdp):
    """The compat build's timer takes 8 keys a run (5.10's verifier refused
    64), the other 64: either way the controller sends what a run left, so
    every entry is retransmitted once when due, and a pause flushes all."""
    prog, maps = kdp
    reset(prog, maps, cachelimit=150, pause_ms=60000)
    for i in range(150):
        run(prog.xdp_fd, syn(sport=6000 + i))
    timer = Syncache(maps, prog.timer_fd)
    assert timer.tick(time.monotonic_ns() + 10 * 10**9) == (150, 0)
    run(prog.xdp_fd, syn(sport=7000))  # the 151st overflows: paused
    assert timer.tick() == (0, 150)
    assert maps.syncache_state.lookup(0).entries == 0
