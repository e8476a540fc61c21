"""The XDP program through BPF_PROG_TEST_RUN on crafted frames, in the
unit namespace.

SYN cases must come back as the exact SYN-ACK that model.py computes
(addresses, ports, flags, ack, options, both checksums recomputed in
Python, the cookie from the Python reference); other frames must get the
verdict and counter of the table below.

Most tests hold synguard's own cookies (the dp and cookies_only fixtures'
build). Those under "both cookie modes" run once per build of the
cookie_dp fixture: synguard's, and the kernel's cookies (--cookies
kernel), built as for this kernel and as for one before 5.18/5.11
(datapath.COMPAT: frames copied from packet pointers, the precise clock),
which is all of those kernels that can be tried here. With the kernel's
cookies the SYN-ACK's ISS is the kernel's cookie (bpf_tcp_check_syncookie
accepts it, nothing else), and the TSval carries the options in its low 6
bits; the tests marked kernel_only hold what that mode alone does.
"""

import os
import struct
import time

import pytest
from conftest import PORT, PORT_NO_LISTENER, PORT_UNPROTECTED, reset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model import (
    CLIENT4,
    CLIENT6,
    SERVER4,
    SERVER6,
    ack_for,
    expected_kernel_synack,
    expected_reset,
    expected_synack,
    flow_key,
    handed_off,
    handoff,
    keys,
    run,
    syn,
    tsval_of,
)
from synguard import datapath, host, layout, libbpf, packets
from synguard.keys import KeyRotator
from synguard.lab import cookie, netns, support
from synguard.packets import ACK, CWR, ECE, FIN, RST, SYN, tcp_options
from synguard.syncache import Syncache
from test_syncache import entry, retransmitted

LINUX = tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0))

SYN_CASES = {
    "v4, Linux options": syn(),
    "v6, Linux options": syn(CLIENT6, SERVER6, options=tcp_options(mss=1440, wscale=7, sack=True, ts=(5, 0))),
    "v4, no options": syn(options=b""),
    "v6, no options": syn(CLIENT6, SERVER6, options=b""),
    "v4, Windows order, no timestamps": syn(
        options=tcp_options(mss=1460, wscale=8, sack=True, layout="windows")
    ),
    "v4, Windows order, timestamps": syn(
        options=tcp_options(mss=1460, wscale=8, sack=True, ts=(9, 0), layout="windows")
    ),
    "v4, macOS order": syn(options=tcp_options(mss=1460, wscale=6, sack=True, ts=(1, 0), layout="macos")),
    "v6, macOS order": syn(
        CLIENT6, SERVER6, options=tcp_options(mss=1440, wscale=6, sack=True, ts=(1, 0), layout="macos")
    ),
    "v4, MSS only": syn(options=tcp_options(mss=1200)),
    "v4, MSS below the table": syn(options=tcp_options(mss=500)),
    "v4, MSS zero": syn(options=tcp_options(mss=0)),
    "v4, jumbo MSS clamped to ours": syn(options=tcp_options(mss=8960, sack=True)),
    "v4, window scale 14 rounds down": syn(options=tcp_options(mss=1460, wscale=14)),
    "v4, window scale 200 is taken as 14": syn(options=tcp_options(mss=1460, wscale=200)),
    "v4, window scale 3 rounds down": syn(options=tcp_options(mss=1460, wscale=3)),
    "v4, SACK and timestamps only": syn(options=tcp_options(sack=True, ts=(3, 4))),
    "v4, timestamps without SACK": syn(options=tcp_options(mss=1460, ts=(3, 0))),
    "v4, one VLAN tag": syn(vlans=(100,)),
    "v6, one VLAN tag": syn(CLIENT6, SERVER6, vlans=(7,)),
    "v4, QinQ": syn(vlans=(10, 20)),
    "v6, QinQ": syn(CLIENT6, SERVER6, vlans=(4094, 1)),
    "v4, IP options in the SYN": syn(ip_options=b"\x01\x01\x01\x00"),
    "v4, data in the SYN is not acked": syn(payload=b"GET / HTTP/1.0\r\n\r\n"),
    "v4, unknown option skipped": syn(options=b"\x1e\x06abcd" + LINUX[:-4] + b"\x01\x01\x01\x01\x01\x00"),
    "v4, options after EOL ignored": syn(options=tcp_options(mss=1460) + b"\x00\x03\x03\x07"),
    "v4, bad option length stops parsing": syn(options=tcp_options(mss=1400) + b"\x03\x01\x07\x00"),
    "v4, wrong-size MSS ignored": syn(options=b"\x02\x03\x05\x01" + tcp_options(sack=True, ts=(1, 1))),
    "v4, 40 bytes of options": syn(
        options=b"\x01" * 20 + tcp_options(mss=1460, wscale=7, sack=True, ts=(5, 0))[:20]
    ),
    "v4, options ending past the header": syn(options=tcp_options(mss=1460)[:4] + b"\x08\x0a\x00\x00"),
    "v4, max sequence number": syn(seq=0xFFFFFFFF),
}


def counters_delta(maps, before):
    now = maps.read_counters()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


@pytest.mark.parametrize("client,server", [(CLIENT4, SERVER4), (CLIENT6, SERVER6)])
def test_cookie_equals_python_reference_for_many_flows(cookies_only, client, server):
    prog, maps = cookies_only
    import random

    rng = random.Random(7)
    for _ in range(200):
        frame = syn(
            client,
            server,
            sport=rng.randrange(1, 65536),
            seq=rng.getrandbits(32),
            options=tcp_options(
                mss=rng.choice([536, 1220, 1300, 1440, 1460, 9000]),
                wscale=rng.choice([None, 0, 5, 7, 9, 14]),
                sack=rng.random() < 0.5,
            ),
        )
        verdict, out = run(prog.xdp_fd, frame)
        assert verdict == libbpf.XDP_TX
        assert out == expected_synack(frame, maps)[0]


def test_options_follow_the_sysctls(cookies_only):
    prog, maps = cookies_only
    cfg = maps.config.lookup(0)
    for flags in range(0, 16, 2):
        cfg.flags = flags
        maps.config.update(0, cfg)
        frame = syn()
        verdict, out = run(prog.xdp_fd, frame)
        tsval = packets.parse_frame(out).options.get("ts", (0, 0))[0]
        assert out == expected_synack(frame, maps, tsval)[0], "config flags %#x" % flags


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)))
def test_any_option_bytes_are_parsed_like_linux(cookies_only, raw):
    """Random option bytes: the SYN-ACK echoes what a Linux-style parser
    (packets.parse_options) reads from them."""
    prog, maps = cookies_only
    frame = syn(options=raw)
    verdict, out = run(prog.xdp_fd, frame)
    if packets.parse_options(raw).get("signed"):  # TCP-MD5 or TCP-AO: the kernel's
        assert (verdict, out) == (libbpf.XDP_PASS, frame)
        return
    assert verdict == libbpf.XDP_TX
    tsval = packets.parse_frame(out).options.get("ts", (0, 0))[0]
    assert out == expected_synack(frame, maps, tsval)[0]


def _udp4():
    f = bytearray(syn())
    f[23] = 17  # protocol
    return bytes(f)


def _frag4():
    f = bytearray(syn())
    f[20] |= 0x20  # MF
    f[21] = 1  # offset 8: a later fragment
    return bytes(f)


def _ihl4():
    f = bytearray(syn())
    f[14] = 0x44  # IHL 4 < 5
    return bytes(f)


def _long_totlen():
    f = bytearray(syn())
    struct.pack_into("!H", f, 16, 1400)
    return bytes(f)


def _doff(doff):
    f = bytearray(syn())
    f[46] = doff << 4
    return bytes(f)


def _v6_hop_by_hop_past_the_frame():
    """Next header hop-by-hop, but the TCP header where it should be: its
    port bytes read as a next header and a length of 65 x 8 bytes."""
    f = bytearray(syn(CLIENT6, SERVER6))
    f[20] = 0  # next header: hop-by-hop options
    return bytes(f)


ARP = packets.SERVER_MAC + packets.CLIENT_MAC + b"\x08\x06" + bytes(28)

# IPv6 extension headers, as packets.tcp_frame takes them: (type, body).
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, AH = 0, 43, 44, 60, 51
PAD6 = b"\x01\x04" + bytes(4)  # PadN: an 8-byte options header of padding


def _rh(rtype, left):
    """A routing header with one address."""
    return (ROUTING, bytes([rtype, left]) + bytes(4) + bytes(16))


def _frag6(offset, more):
    return (FRAGMENT, (offset | more).to_bytes(2, "big") + b"\x00\x00\x30\x39")


def syn6(ext, **kw):
    return syn(CLIENT6, SERVER6, ext=ext, **kw)


# SYNs behind extension headers Linux takes and XDP answers: the exact
# SYN-ACK Linux would send (a plain IPv6 header: nothing echoed), counted
# as such; a first fragment is answered from the TCP header it holds.
EXT_SYN_CASES = {
    "behind hop-by-hop": (syn6([(HOPOPTS, PAD6)]), ("exthdr",)),
    "behind destination options": (syn6([(DSTOPTS, PAD6)]), ("exthdr",)),
    "behind hop-by-hop and destination options": (syn6([(HOPOPTS, PAD6), (DSTOPTS, PAD6)]), ("exthdr",)),
    "behind Pad1s and an unknown option to skip": (
        syn6([(DSTOPTS, b"\x00\x00\x1e\x06abcdef\x00\x00\x00\x00")]),
        ("exthdr",),
    ),
    "behind routing type 0, no segments left": (syn6([_rh(0, 0)]), ("exthdr",)),
    "behind routing of a type Linux skips, none left": (syn6([_rh(253, 0)]), ("exthdr",)),
    "behind the five of RFC 8200's order": (
        syn6([(HOPOPTS, PAD6), (DSTOPTS, PAD6), _rh(0, 0), _frag6(0, 0), (DSTOPTS, PAD6)]),
        ("exthdr",),
    ),
    "behind destination options, in QinQ": (syn6([(DSTOPTS, PAD6)], vlans=(5, 6)), ("exthdr",)),
    "in an atomic fragment": (syn6([_frag6(0, 0)]), ("exthdr",)),
    "in a first fragment, v6": (syn6([_frag6(0, 1)]), ("exthdr", "fragment")),
    "in a first fragment, v4": (syn(frag_word=0x2000), ("fragment",)),
}


@pytest.mark.parametrize("name", EXT_SYN_CASES)
def test_syn_behind_extension_headers_gets_linux_synack(dp, name):
    prog, maps = dp
    frame, counters = EXT_SYN_CASES[name]
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    seg = packets.parse_frame(out)
    assert seg.ip_csum_ok and seg.tcp_csum_ok
    assert out == expected_synack(frame, maps, tsval_of(out))[0]
    assert counters_delta(maps, before) == {
        "packets": 1,
        "sendcookie": 1,
        "added": 1,
        **{c: 1 for c in counters},
    }


@pytest.mark.parametrize(
    "sysctls,want",
    [
        ({}, (8, 255)),  # Linux's defaults: 8 options, INT_MAX bytes
        ({"net.ipv6.max_dst_opts_number": "-8"}, (0, 255)),  # negative: unknown options refused
        ({"net.ipv6.max_hbh_opts_number": "2", "net.ipv6.max_dst_opts_length": "16"}, (2, 2)),
        ({"net.ipv6.max_hbh_length": "7"}, (8, 0)),
    ],
)
def test_options_header_limits_follow_the_sysctls(monkeypatch, sysctls, want):
    from synguard import kernelconf

    defaults = {"net.ipv6.max_hbh_opts_number": "8", "net.ipv6.max_dst_opts_number": "8"}
    values = {**defaults, **sysctls}
    monkeypatch.setattr(
        kernelconf, "read_sysctl", lambda name, default=None: [values[name]] if name in values else default
    )
    assert kernelconf.ext_limits() == want


@pytest.mark.parametrize(
    "config,ext",
    [
        (dict(ext_opts=0), [(DSTOPTS, b"\x1e\x04abcd")]),  # no unknown option allowed
        (dict(ext_len8=1), [(DSTOPTS, b"\x1e\x0a" + bytes(10) + b"\x01\x00")]),  # 16 bytes, 8 allowed
    ],
    ids=["max_dst_opts_number", "max_dst_opts_length"],
)
def test_options_headers_beyond_the_hosts_limits_are_the_kernels(datapath, unit_ns, config, ext):
    """What the host's sysctls refuse, the data path leaves to the kernel."""
    from conftest import reset
    from synguard.lab import netns

    prog, maps = datapath
    frame = syn6(ext)
    reset(prog, maps, **config)
    with netns.netns(unit_ns):
        assert run(prog.xdp_fd, frame) == (libbpf.XDP_PASS, frame)
    reset(prog, maps)
    with netns.netns(unit_ns):
        assert run(prog.xdp_fd, frame)[0] == libbpf.XDP_TX


def test_cookie_ack_behind_extension_headers_is_handed_on(cookies_only):
    """The third ACK behind destination options: validated and handed off
    as a plain one (tc finds its TCP header the same way; the kernel takes
    the request socket after the extension headers)."""
    prog, maps = cookies_only
    verdict, synack = run(prog.xdp_fd, syn6([(DSTOPTS, PAD6)]))
    a = packets.parse_frame(ack_for(synack))
    ack = packets.tcp_frame(
        a.src,
        a.dst,
        a.sport,
        a.dport,
        seq=a.seq,
        ack=a.ack,
        flags=ACK,
        options=a.raw_options,
        ext=[(DSTOPTS, PAD6)],
    )
    before = maps.read_counters()
    assert run(prog.xdp_fd, ack) == (libbpf.XDP_PASS, ack)
    assert handed_off(maps, ack)
    assert handoff(maps, ack).attrs.tstamp_ok == 1
    assert counters_delta(maps, before) == {"packets": 1, "recvcookie": 1, "exthdr": 1}


# Katran-style table: what the frame is, the frame, the verdict, the counter
# (or counters). An XDP_TX here is the RST for a segment nobody knows.
OTHER_CASES = [
    ("ARP", ARP, libbpf.XDP_PASS, "passed"),
    ("IPv4 UDP", _udp4(), libbpf.XDP_PASS, "passed"),
    ("IPv4 later fragment", _frag4(), libbpf.XDP_PASS, "passed"),
    ("v6 hop-by-hop past the frame", _v6_hop_by_hop_past_the_frame(), libbpf.XDP_PASS, "passed"),
    # Extension headers Linux refuses, acts on or may: the kernel's.
    ("v6 hop-by-hop not first", syn6([(DSTOPTS, PAD6), (HOPOPTS, PAD6)]), libbpf.XDP_PASS, "passed"),
    ("v6 routing type 0 with a segment left", syn6([_rh(0, 1)]), libbpf.XDP_PASS, "passed"),
    ("v6 routing type 2, none left", syn6([_rh(2, 0)]), libbpf.XDP_PASS, "passed"),
    ("v6 routing type 4 (SRv6), none left", syn6([_rh(4, 0)]), libbpf.XDP_PASS, "passed"),
    ("v6 router alert", syn6([(HOPOPTS, b"\x05\x02\x00\x00\x01\x00")]), libbpf.XDP_PASS, "passed"),
    ("v6 option that says discard", syn6([(DSTOPTS, b"\x9e\x04abcd")]), libbpf.XDP_PASS, "passed"),
    ("v6 PadN with data", syn6([(DSTOPTS, b"\x01\x04\x00\x07\x00\x00")]), libbpf.XDP_PASS, "passed"),
    ("v6 padding past 7 bytes", syn6([(DSTOPTS, b"\x01\x0c" + bytes(12))]), libbpf.XDP_PASS, "passed"),
    ("v6 six headers: past the bound", syn6([(DSTOPTS, PAD6)] * 6), libbpf.XDP_PASS, "passed"),
    ("v6 authentication header", syn6([(AH, bytes(14))]), libbpf.XDP_PASS, "passed"),
    ("v6 later fragment", syn6([_frag6(8, 1)]), libbpf.XDP_PASS, "passed"),
    ("v6 first fragment, not whole 8 bytes", syn6([_frag6(0, 1)], payload=b"x"), libbpf.XDP_PASS, "passed"),
    ("v4 first fragment, not whole 8 bytes", syn(frag_word=0x2000, payload=b"x"), libbpf.XDP_PASS, "passed"),
    (
        "ACK in a first fragment",
        packets.tcp_frame(
            CLIENT4, SERVER4, 1, PORT, seq=5, ack=99, flags=ACK, frag_word=0x2000, payload=bytes(4)
        ),
        libbpf.XDP_PASS,
        "passed",
    ),
    ("SYN to an unprotected port", syn(dport=PORT_UNPROTECTED), libbpf.XDP_PASS, "passed"),
    ("SYN-ACK", packets.tcp_frame(CLIENT4, SERVER4, 1, PORT, flags=SYN | ACK), libbpf.XDP_PASS, "passed"),
    (
        "RST, no syncache entry",
        packets.tcp_frame(CLIENT4, SERVER4, 1, PORT, flags=RST),
        libbpf.XDP_PASS,
        "badrst",
    ),
    ("SYN+FIN", packets.tcp_frame(CLIENT4, SERVER4, 1, PORT, flags=SYN | FIN), libbpf.XDP_PASS, "passed"),
    ("SYN, protected port, no listener", syn(dport=PORT_NO_LISTENER), libbpf.XDP_PASS, "nolistener"),
    (
        "ACK, protected port, no listener",
        packets.tcp_frame(CLIENT4, SERVER4, 1, PORT_NO_LISTENER, flags=ACK),
        libbpf.XDP_PASS,
        "nolistener",
    ),
    (
        "ACK to an unprotected port",
        packets.tcp_frame(CLIENT4, SERVER4, 1, PORT_UNPROTECTED, flags=ACK),
        libbpf.XDP_PASS,
        "passed",
    ),
    ("IPv4 IHL < 5", _ihl4(), libbpf.XDP_PASS, "malformed"),
    ("IPv4 total length past the frame", _long_totlen(), libbpf.XDP_PASS, "malformed"),
    ("TCP data offset < 5", _doff(4), libbpf.XDP_PASS, "malformed"),
    ("TCP data offset past the segment", _doff(15), libbpf.XDP_PASS, "malformed"),
    (
        "ACK with a bad cookie: an RST",
        packets.tcp_frame(CLIENT4, SERVER4, 1, PORT, seq=5, ack=99, flags=ACK),
        libbpf.XDP_TX,
        ("badcookie", "rstsent"),
    ),
    (
        "v6 data with a bad cookie, in QinQ: an RST",
        packets.tcp_frame(
            CLIENT6, SERVER6, 2, PORT, seq=5, ack=7, flags=ACK, payload=b"x" * 100, vlans=(5, 6)
        ),
        libbpf.XDP_TX,
        ("badcookie", "rstsent"),
    ),
    (
        "v6 ACK behind destination options, bad cookie: a plain RST",
        packets.tcp_frame(CLIENT6, SERVER6, 2, PORT, seq=5, ack=7, flags=ACK, ext=[(DSTOPTS, PAD6)]),
        libbpf.XDP_TX,
        ("badcookie", "rstsent", "exthdr"),
    ),
    (
        "FIN with a bad cookie, IP options: an RST",
        packets.tcp_frame(
            CLIENT4, SERVER4, 3, PORT, seq=5, ack=0xFFFFFFFF, flags=ACK | FIN, ip_options=b"\x01" * 4
        ),
        libbpf.XDP_TX,
        ("badcookie", "rstsent"),
    ),
]


def counted(counter):
    return {"packets": 1, **{c: 1 for c in ((counter,) if isinstance(counter, str) else counter)}}


@pytest.mark.parametrize("name,frame,verdict,counter", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_frames(dp, name, frame, verdict, counter):
    prog, maps = dp
    before = maps.read_counters()
    got, out = run(prog.xdp_fd, frame)
    assert got == verdict
    if verdict == libbpf.XDP_PASS:
        assert out == frame  # untouched
    if verdict == libbpf.XDP_TX:
        seg = packets.parse_frame(out)
        assert seg.ip_csum_ok and seg.tcp_csum_ok
        assert out == expected_reset(frame, maps)
    assert counters_delta(maps, before) == counted(counter)


@pytest.mark.parametrize(
    "name", ["v4, Linux options", "v6, Linux options", "v6, QinQ", "v4, IP options in the SYN"]
)
def test_every_truncation_passes_untouched(dp, name):
    prog, maps = dp
    frame = SYN_CASES[name]
    before = maps.read_counters()
    for n in range(14, len(frame)):
        verdict, out = run(prog.xdp_fd, frame[:n])
        assert verdict == libbpf.XDP_PASS, n
        assert out == frame[:n]
    cut = len(frame) - 14
    assert counters_delta(maps, before) == {"packets": cut, "malformed": cut}


def _handshake(prog, maps, frame, **ack_kw):
    verdict, synack = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    return synack, ack_for(synack, **ack_kw)


@pytest.mark.parametrize(
    "name",
    [
        "v4, Linux options",
        "v6, Linux options",
        "v4, no options",
        "v4, Windows order, no timestamps",
        "v6, QinQ",
        "v4, MSS below the table",
        "v4, window scale 14 rounds down",
    ],
)
def test_valid_cookie_ack_is_handed_on(cookies_only, name):
    prog, maps = cookies_only
    frame = SYN_CASES[name]
    synack, ack = _handshake(prog, maps, frame)
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, ack)
    assert verdict == libbpf.XDP_PASS
    assert out == ack  # the frame itself is untouched
    assert handed_off(maps, ack)
    assert counters_delta(maps, before) == {"packets": 1, "recvcookie": 1}

    s, sa = packets.parse_frame(frame), packets.parse_frame(synack)
    v6 = s.version == 6
    mss, snd_ws, sack, _slot = cookie.decode_meta(sa.seq & 0xFF, v6)
    peer_mss = s.options.get("mss", 1220 if v6 else 536)
    a = handoff(maps, ack).attrs
    assert a.mss == mss == layout.mss_table(v6)[cookie.mss_index(min(peer_mss, 1440 if v6 else 1460), v6)]
    assert (a.wscale_ok, a.snd_wscale, a.rcv_wscale) == ((1, snd_ws, 7) if snd_ws is not None else (0, 0, 0))
    assert a.sack_ok == sack == bool(sa.options.get("sack"))
    if "ts" in sa.options:
        assert (a.tstamp_ok, a.rcv_tsval, a.rcv_tsecr) == (1, 778, sa.options["ts"][0])
    else:
        assert (a.tstamp_ok, a.rcv_tsval, a.rcv_tsecr) == (0, 0, 0)
    assert (a.ecn_ok, a.usec_ts_ok, bytes(a.reserved)) == (0, 0, b"\0\0\0")


def test_second_segment_of_a_fresh_handshake_is_not_handed_off_twice(cookies_only):
    """ACK and first data segment in one batch: only the first gets a
    request socket; the second goes up plain and finds the new socket."""
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn())
    data = ack_for(synack, payload=b"GET /")
    before = maps.read_counters()
    assert run(prog.xdp_fd, ack)[0] == libbpf.XDP_PASS and handed_off(maps, ack)
    first = handoff(maps, ack).at_ns
    verdict, out = run(prog.xdp_fd, data)
    assert verdict == libbpf.XDP_PASS and out == data
    assert handoff(maps, ack).at_ns == first  # no second hand-off
    assert counters_delta(maps, before) == {"packets": 2, "recvcookie": 1, "coalesced": 1}
    time.sleep(0.02)  # past the 10 ms window: a retransmission is handed off again
    assert run(prog.xdp_fd, data)[0] == libbpf.XDP_PASS and handoff(maps, ack).at_ns > first


def test_a_port_reused_at_once_is_a_new_handshake(cookies_only):
    """ab or a connection pool reuses a port milliseconds after its last
    connection there closed (the server keeps no TIME_WAIT). Within the
    coalescing window the new handshake's ACK is handed off itself: passed
    up plain, as a segment trailing the old hand-off, it would draw the
    kernel's RST."""
    prog, maps = cookies_only
    first = _handshake(prog, maps, syn())[1]
    assert run(prog.xdp_fd, first)[0] == libbpf.XDP_PASS and handed_off(maps, first)
    # Linux gives a reused 4-tuple the old ISN plus its clock (64 ns a tick)
    second = _handshake(prog, maps, syn(seq=0x12345678 + 90_000))[1]
    before = maps.read_counters()
    assert run(prog.xdp_fd, second) == (libbpf.XDP_PASS, second)
    assert handed_off(maps, second)
    assert counters_delta(maps, before) == {"packets": 1, "recvcookie": 1}


def test_a_late_fin_of_a_finished_connection_is_reset_at_once(cookies_only):
    """The server closed first and keeps no TIME_WAIT, so the client's FIN
    finds no socket. It acks the server's response and FIN, more than the
    handshake's ISS: it is not a segment of a connection being made, and
    gets the RST the kernel would send, at once."""
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn())
    run(prog.xdp_fd, ack)
    a = packets.parse_frame(ack)
    fin = packets.tcp_frame(
        a.src, a.dst, a.sport, a.dport, seq=a.seq + 83, ack=(a.ack + 159) & 0xFFFFFFFF, flags=ACK | FIN
    )
    before = maps.read_counters()
    assert run(prog.xdp_fd, fin) == (libbpf.XDP_TX, expected_reset(fin, maps))
    assert counters_delta(maps, before) == {"packets": 1, "badcookie": 1, "rstsent": 1}


def test_later_segments_right_behind_a_hand_off_go_up_plain(cookies_only):
    """Data segments behind the handshake in the same batch carry no cookie
    (seq > ISN+1) and find no socket yet: within 10 ms of the hand-off they
    pass; a bogus pure ACK for the same 4-tuple is dropped, and so is any
    segment of it for 3 s (a connection being made: no RST)."""
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn())
    a = packets.parse_frame(ack)

    def segment(seq_offset, payload, flags=ACK):
        return packets.tcp_frame(
            a.src,
            a.dst,
            a.sport,
            a.dport,
            seq=(a.seq + seq_offset) & 0xFFFFFFFF,
            ack=a.ack,
            flags=flags,
            options=a.raw_options,
            payload=payload,
        )

    second, fin, bare = segment(1448, b"z" * 1448), segment(1448, b"", ACK | FIN), segment(7, b"")
    run(prog.xdp_fd, ack)
    before = maps.read_counters()
    assert run(prog.xdp_fd, second) == (libbpf.XDP_PASS, second)
    assert run(prog.xdp_fd, fin) == (libbpf.XDP_PASS, fin)
    assert run(prog.xdp_fd, bare)[0] == libbpf.XDP_DROP  # of a connection being made: no RST
    assert counters_delta(maps, before) == {"packets": 3, "coalesced": 2, "badcookie": 1, "rstheld": 1}
    time.sleep(0.02)  # past the 10 ms window: no longer taken for the hand-off's batch
    assert run(prog.xdp_fd, second)[0] == libbpf.XDP_DROP
    # Seconds after its hand-off, a segment nobody knows is one of a
    # connection this host forgot: reset.
    h = handoff(maps, ack)
    h.at_ns -= 4 * 10**9
    maps.handoffs.update(flow_key(ack), h)
    assert run(prog.xdp_fd, second) == (libbpf.XDP_TX, expected_reset(second, maps))


def test_ack_with_data_and_cookie_is_handed_on(cookies_only):
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn(), payload=b"hello")
    verdict, out = run(prog.xdp_fd, ack)
    assert verdict == libbpf.XDP_PASS and out == ack and handed_off(maps, ack)


def test_cookie_under_the_previous_key_is_accepted(cookies_only):
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn())
    KeyRotator(maps.secrets).rotate()
    assert packets.parse_frame(synack).seq & 1 != keys(maps)[0]  # minted with the now idle slot
    assert run(prog.xdp_fd, ack)[0] == libbpf.XDP_PASS


def test_cookie_under_an_expired_key_is_rejected(cookies_only):
    prog, maps = cookies_only
    synack, ack = _handshake(prog, maps, syn())
    rotator = KeyRotator(maps.secrets)
    rotator.rotate()
    rotator.rotate()  # the slot the cookie names now holds a new key
    assert run(prog.xdp_fd, ack) == (libbpf.XDP_TX, expected_reset(ack, maps))


def test_new_cookies_use_the_new_key_after_rotation(cookies_only):
    prog, maps = cookies_only
    before_slot = keys(maps)[0]
    KeyRotator(maps.secrets).rotate()
    verdict, synack = run(prog.xdp_fd, syn())
    assert packets.parse_frame(synack).seq & 1 == before_slot ^ 1
    assert synack == expected_synack(syn(), maps, tsval_of(synack))[0]


def test_ack_for_an_established_socket_passes(dp):
    """An ACK of a 4-tuple the kernel has a socket for is never judged."""
    import socket

    prog, maps = dp
    c = socket.create_connection(("127.0.0.1", PORT))
    try:
        cport = c.getsockname()[1]
        frame = packets.tcp_frame("127.0.0.1", "127.0.0.1", cport, PORT, seq=1, ack=2, flags=ACK)
        before = maps.read_counters()
        verdict, out = run(prog.xdp_fd, frame)
        assert verdict == libbpf.XDP_PASS and out == frame
        assert counters_delta(maps, before) == {"packets": 1, "established": 1}
        syn_again = packets.tcp_frame("127.0.0.1", "127.0.0.1", cport, PORT, seq=1, flags=SYN)
        assert run(prog.xdp_fd, syn_again)[0] == libbpf.XDP_PASS  # RFC 5961 is the kernel's job
    finally:
        c.close()


def test_every_frame_lands_in_exactly_one_counter(dp):
    prog, maps = dp
    before = maps.read_counters()
    frames = list(SYN_CASES.values()) + [c[1] for c in OTHER_CASES]
    for f in frames:
        run(prog.xdp_fd, f)
    d = counters_delta(maps, before)
    assert d["packets"] == len(frames) == sum(d.get(k, 0) for k in layout.xdp_outcomes())


# --- listeners and options XDP leaves to the kernel, ECN --------------------

PORT_MPTCP = 8082
IPPROTO_MPTCP = 262


def test_an_mptcp_listener_is_left_to_the_kernel(dp, unit_ns):
    """bpf_sk_assign_tcp_reqsk refuses MPTCP listeners (Go's default since
    1.24): their SYNs, ACKs and RSTs pass untouched, a plain listener's
    port next to it is answered."""
    import socket

    prog, maps = dp
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", PORT_MPTCP))
        s.listen(8)
        maps.set_ports([PORT, PORT_MPTCP])
        frames = [
            syn(dport=PORT_MPTCP),
            syn(CLIENT6, SERVER6, dport=PORT_MPTCP),
            packets.tcp_frame(CLIENT4, SERVER4, 40000, PORT_MPTCP, seq=5, ack=6, flags=ACK),
            packets.tcp_frame(CLIENT4, SERVER4, 40000, PORT_MPTCP, seq=5, flags=RST),
        ]
        before = maps.read_counters()
        for frame in frames:
            assert run(prog.xdp_fd, frame) == (libbpf.XDP_PASS, frame)
        assert counters_delta(maps, before) == {"packets": 4, "mptcp": 4}
        assert run(prog.xdp_fd, syn())[0] == libbpf.XDP_TX  # the plain listener on PORT
    finally:
        s.close()


MD5 = b"\x13\x12" + bytes(16)  # kind 19 (RFC 2385): 16 bytes of digest
AO = b"\x1d\x08\x01\x02" + bytes(4)  # kind 29 (RFC 5925): key ids and a short MAC


@pytest.mark.parametrize("option", [MD5 + b"\x01\x01", AO], ids=["TCP-MD5", "TCP-AO"])
def test_a_signed_syn_is_left_to_the_kernel(dp, option):
    """XDP cannot sign its SYN-ACK: a SYN carrying TCP-MD5 or TCP-AO goes to
    the kernel untouched, counted, never answered unsigned."""
    prog, maps = dp
    frame = syn(options=option + tcp_options(mss=1460, sack=True, ts=(1, 0)))
    before = maps.read_counters()
    assert run(prog.xdp_fd, frame) == (libbpf.XDP_PASS, frame)
    assert counters_delta(maps, before) == {"packets": 1, "signed": 1}


ECN_CASES = {
    # name: (SYN flags beyond SYN, IP ECN bits, reserved bits, timestamps, tcp_ecn on) -> ECE back
    "ECE and CWR": (packets.ECE | packets.CWR, 0, 0, True, True, True),
    "ECE and CWR, v6": (packets.ECE | packets.CWR, 0, 0, True, True, True),
    "no timestamps: no way to tell the ACK": (packets.ECE | packets.CWR, 0, 0, False, True, False),
    "ECE alone": (packets.ECE, 0, 0, True, True, False),
    "SYN marked ECT(0)": (packets.ECE | packets.CWR, 2, 0, True, True, False),
    "SYN marked CE": (packets.ECE | packets.CWR, 3, 0, True, True, False),
    "SYN marked ECT(0), with AE (Accurate ECN)": (packets.ECE | packets.CWR, 2, 1, True, True, True),
    "net.ipv4.tcp_ecn=0": (packets.ECE | packets.CWR, 0, 0, True, False, False),
}


@pytest.mark.parametrize("path", ["syncache", "cookie"])
@pytest.mark.parametrize("name", ECN_CASES)
def test_ecn_setup_as_the_kernel_answers_it(datapath, unit_ns, path, name):
    """ECE back (without CWR) exactly when the kernel's own SYN-ACK would
    carry it; the hand-off then says ecn_ok, from the entry or from the low
    bit of the TSval the client echoes."""
    prog, maps = datapath
    flags, ecn_bits, reserved, ts, sysctl_on, want = ECN_CASES[name]
    cf = layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS | (layout.CF_ECN if sysctl_on else 0)
    reset(prog, maps, flags=cf, syncookies_only=int(path == "cookie"))
    v6 = name.endswith("v6")
    frame = packets.tcp_frame(
        CLIENT6 if v6 else CLIENT4,
        SERVER6 if v6 else SERVER4,
        40000,
        PORT,
        seq=77,
        flags=SYN | flags,
        options=tcp_options(mss=1460, wscale=7, sack=True, ts=(5, 0) if ts else None),
        tos=ecn_bits,
        reserved=reserved,
    )
    with netns.netns(unit_ns):
        verdict, synack = run(prog.xdp_fd, frame)
        assert verdict == libbpf.XDP_TX
        sa = packets.parse_frame(synack)
        assert synack == expected_synack(frame, maps, sa.options.get("ts", (0, 0))[0])[0]
        assert (sa.flags & (packets.ECE | packets.CWR)) == (packets.ECE if want else 0)
        ack = ack_for(synack)
        assert run(prog.xdp_fd, ack)[0] == libbpf.XDP_PASS and handed_off(maps, ack)
        assert handoff(maps, ack).attrs.ecn_ok == int(want)


def test_maps_read_alike_without_batch_lookups(dp):
    """Linux 5.10 refuses batch lookups on per-CPU arrays (ENOTSUPP) and
    PinnedMap then reads key by key: the same counters and entries, in
    chunks of the size asked for."""
    prog, maps = dp
    before = maps.read_counters()
    for sport in (5101, 5102, 5103):
        run(prog.xdp_fd, syn(sport=sport))

    def read():
        counters = maps.read_counters()
        entries = sorted(bytes(k) for k, _ in maps.syncache.items())
        chunks = [n for _, _, n in maps.counters.batches(chunk=50)]
        return counters, entries, chunks

    batched = read()
    try:
        maps.counters._no_batch = maps.syncache._no_batch = True
        per_key = read()
    finally:
        maps.counters._no_batch = maps.syncache._no_batch = False
    assert per_key == batched
    counters, entries, chunks = batched
    assert len(entries) == 3 and counters["added"] - before["added"] == 3
    assert sum(chunks) == maps.counters.max_entries and max(chunks) == 50


# --- both cookie modes -------------------------------------------------------

# The builds cookie_dp runs on: the kernel's cookies for this kernel and as
# for an older one (the defines that build needs, and plain maps the loader
# pins, as with a bcc before 0.20), and synguard's own.
# pytest groups a build's tests, kernel_only's too: one build each.
BUILDS = {"kernel": (), "kernel-compat": tuple(datapath.COMPAT.values()), "synguard": None}
KERNEL_SYSCTLS = ("net.ipv4.tcp_syncookies", "net.ipv4.tcp_timestamps")
kernel_only = pytest.mark.parametrize("build", ["kernel", "kernel-compat"], indirect=True)


@pytest.fixture(scope="module", params=list(BUILDS))
def build(request, unit_ns):
    """(cookies, prog, maps). For the kernel's cookies the unit namespace
    has tcp_syncookies=2 and tcp_timestamps=2 meanwhile, as attach sets
    them: its listener then has the kernel mint a cookie for every SYN."""
    if BUILDS[request.param] is None:
        yield ("synguard", *request.getfixturevalue("datapath"))
        return
    with netns.netns(unit_ns):
        saved = {name: host.read_sysctl(name)[0] for name in KERNEL_SYSCTLS}
        for name in saved:
            host.write_sysctl(name, "2")
    try:
        with pytest.MonkeyPatch.context() as mp:
            if request.param == "kernel-compat":  # and as with a bcc before 0.20
                mp.setattr(datapath, "bcc_makes_pins", lambda: False)
            with support.compiled("unit-kc", cookies="kernel", defines=BUILDS[request.param]) as (dp, maps):
                # Pinned by the loader or by bcc: the tests reach the
                # programs' maps through these pins only.
                assert sorted(os.listdir(dp.pins)) == sorted(datapath.maps.declared())
                yield "kernel", dp, maps
    finally:
        with netns.netns(unit_ns):
            for name, value in saved.items():
                host.write_sysctl(name, value)


@pytest.fixture
def cookie_dp(build, unit_ns):
    """As dp, for each build: (cookies, prog, maps)."""
    cookies, prog, maps = build
    reset(prog, maps)
    with netns.netns(unit_ns):
        yield cookies, prog, maps


@pytest.mark.parametrize("name", SYN_CASES)
def test_syn_becomes_the_exact_cookie_synack(cookie_dp, name):
    cookies, prog, maps = cookie_dp
    frame = SYN_CASES[name]
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, frame)
    now_ns = time.monotonic_ns()
    assert verdict == libbpf.XDP_TX
    seg = packets.parse_frame(out)
    assert seg.ip_csum_ok and seg.tcp_csum_ok
    tsval = seg.options.get("ts", (0, 0))[0]
    if cookies == "kernel":
        expected, options = expected_kernel_synack(frame, maps, seg.seq, tsval)
        assert out == expected
        if "ts" in seg.options:
            assert tsval & 0x3F == options
            now_ms = now_ns // 1000000
            assert now_ms - 1000 < tsval <= now_ms, "the kernel's ms clock, never ahead"
    else:
        expected, h = expected_synack(frame, maps, tsval)
        assert out == expected
        if "ts" in seg.options:
            # Our TSval: a ~1 ms clock (ktime >> 20) plus a keyed offset.
            clock = (tsval - (h >> 32)) & 0xFFFFFFFF
            assert abs(clock - ((now_ns >> 20) & 0xFFFFFFFF)) < 1000
    assert counters_delta(maps, before) == {"packets": 1, "sendcookie": 1, "added": 1}
    support.clear(prog)  # no entry: the cookie decides
    assert run(prog.xdp_fd, ack_for(out))[0] == libbpf.XDP_PASS
    assert counters_delta(maps, before)["recvcookie"] == 1


@kernel_only
@pytest.mark.parametrize(
    "name",
    ["behind routing type 0, no segments left", "in a first fragment, v6", "behind destination options"],
)
def test_syn_behind_extension_headers_gets_the_kernel_cookie(cookie_dp, name):
    """The kernel mints the cookie from the IPv6 and TCP headers wherever
    the TCP header is."""
    _, prog, maps = cookie_dp
    frame, _ = EXT_SYN_CASES[name]
    verdict, out = run(prog.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    seg = packets.parse_frame(out)
    assert out == expected_kernel_synack(frame, maps, seg.seq, seg.options["ts"][0])[0]
    support.clear(prog)  # no entry: the kernel's own check takes the cookie
    before = maps.read_counters()
    assert run(prog.xdp_fd, ack_for(out))[0] == libbpf.XDP_PASS
    assert counters_delta(maps, before) == {"packets": 1, "recvcookie": 1}


def test_ack_matching_an_entry_goes_up_and_takes_the_entry(cookie_dp):
    _, prog, maps = cookie_dp
    _, synack = run(prog.xdp_fd, syn())
    before = maps.read_counters()
    assert run(prog.xdp_fd, ack_for(synack))[0] == libbpf.XDP_PASS
    assert counters_delta(maps, before) == {"packets": 1, "expanded": 1}
    assert maps.syncache_state.lookup(0).entries == 0


TAMPERED = {
    "ack one on": lambda a: {"ack": (a.ack + 1) & 0xFFFFFFFF},
    "ack, one MAC bit": lambda a: {"ack": a.ack ^ 0x100},
    "ack, another MSS claimed": lambda a: {"ack": a.ack ^ 0x80},
    "random ack": lambda a: {"ack": 0x5A5A5A5A},
    "another client ISN": lambda a: {"seq": (a.seq + 7) & 0xFFFFFFFF},
    "another source port": lambda a: {"sport": a.sport + 1},
    "another source address": lambda a: {"src": "198.18.0.9"},
}


@pytest.mark.parametrize("change", TAMPERED)
def test_a_tampered_cookie_ack_gets_an_rst(cookie_dp, change):
    _, prog, maps = cookie_dp
    reset(prog, maps, syncookies_only=1)  # no entries: the cookie alone decides
    _, synack = run(prog.xdp_fd, syn())
    a = packets.parse_frame(ack_for(synack))
    f = {"src": a.src, "sport": a.sport, "seq": a.seq, "ack": a.ack, **TAMPERED[change](a)}
    forged = packets.tcp_frame(
        f["src"], a.dst, f["sport"], a.dport, seq=f["seq"], ack=f["ack"], flags=ACK, options=a.raw_options
    )
    before = maps.read_counters()
    assert run(prog.xdp_fd, forged) == (libbpf.XDP_TX, expected_reset(forged, maps))
    assert counters_delta(maps, before) == {"packets": 1, "badcookie": 1, "rstsent": 1}


# --- the kernel's cookies alone ----------------------------------------------


@kernel_only
def test_without_timestamps_only_the_mss_is_offered(cookie_dp):
    _, prog, maps = cookie_dp
    frame = syn(options=tcp_options(mss=1460, wscale=7, sack=True))
    _, out = run(prog.xdp_fd, frame)
    assert set(packets.parse_frame(out).options) - {"order"} == {"mss"}


@kernel_only
def test_ecn_rides_in_the_tsval(cookie_dp):
    _, prog, maps = cookie_dp
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


@kernel_only
def test_a_syn_the_kernel_mints_no_cookie_for_goes_to_it(cookie_dp):
    """tcp_syncookies=1 and a SYN queue that is not full: the helper
    declines, and the kernel answers the SYN itself."""
    _, prog, maps = cookie_dp
    host.write_sysctl("net.ipv4.tcp_syncookies", "1")
    try:
        before = maps.read_counters()
        assert run(prog.xdp_fd, syn())[0] == libbpf.XDP_PASS
        assert counters_delta(maps, before) == {"packets": 1, "nocookie": 1}
    finally:
        host.write_sysctl("net.ipv4.tcp_syncookies", "2")


# The syncache of the kernel cookies' build; synguard's: test_syncache.py.


@kernel_only
def test_the_timer_retransmits_the_synack_as_sent(cookie_dp):
    _, prog, maps = cookie_dp
    frame = syn()
    _, synack = run(prog.xdp_fd, frame)
    assert retransmitted(prog, maps, frame) == synack


@kernel_only
def test_an_unreachable_for_our_synack_marks_its_entry(cookie_dp):
    _, prog, maps = cookie_dp
    frame = syn()
    _, synack = run(prog.xdp_fd, frame)
    icmp = packets.icmp_unreachable(synack)
    assert run(prog.xdp_fd, icmp) == (libbpf.XDP_PASS, icmp)
    assert entry(maps, frame).flags & layout.SCF_UNREACH


@kernel_only
def test_entries_spread_over_the_buckets(cookie_dp):
    """The kernel's cookie picks an entry's bucket (it is a keyed hash), so
    1000 connection attempts fit bucketlimit 30 over 512 buckets."""
    _, prog, maps = cookie_dp
    before = maps.read_counters()
    for i in range(1000):
        assert run(prog.xdp_fd, syn(sport=20000 + i, seq=i * 7919))[0] == libbpf.XDP_TX
    d = counters_delta(maps, before)
    assert d["added"] == 1000 and "bucketoverflow" not in d
    assert max(maps.syncache_buckets.lookup(b).value for b in range(512)) < 30


@kernel_only
def test_the_timer_takes_every_key_whatever_one_run_takes(cookie_dp):
    """The compat build's timer takes 8 keys a run (5.10's verifier refused
    64), the other 64: either way the controller sends what a run left, so
    every entry is retransmitted once when due, and a pause flushes all."""
    _, prog, maps = cookie_dp
    reset(prog, maps, cachelimit=150, pause_ms=60000)
    for i in range(150):
        run(prog.xdp_fd, syn(sport=6000 + i))
    timer = Syncache(maps, prog.timer_fd)
    assert timer.tick(time.monotonic_ns() + 10 * 10**9) == (150, 0)
    run(prog.xdp_fd, syn(sport=7000))  # the 151st overflows: paused
    assert timer.tick() == (0, 150)
    assert maps.syncache_state.lookup(0).entries == 0
