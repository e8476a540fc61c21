"""Property-based fuzz of the XDP program through BPF_PROG_TEST_RUN.

Random and mutated Ethernet/VLAN/IPv4/IPv6/TCP frames (bad lengths, IP
options, fragments, IPv6 extension header chains, truncations, option lists
with bad lengths, flipped bytes), each verdict held to fuzz_model.py: pass
untouched, drop, a hand-off with the frame untouched behind its metadata,
or a SYN-ACK that parses back to exactly the expected one.

SYNGUARD_FUZZ_EXAMPLES sets the number of frames (make fuzz: 100000).
"""

import os

import pytest
from conftest import PORT, PORT_NO_LISTENER, reset
from fuzz_model import DROP, PASS, TX, expect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model import expected_reset, expected_synack, handed_off, keys, run
from synguard import libbpf, packets
from synguard.lab import netns

EXAMPLES = int(os.environ.get("SYNGUARD_FUZZ_EXAMPLES", "3000"))
V4 = ["198.18.0.%d" % i for i in (1, 2, 77, 255)] + ["198.19.3.4", "0.0.0.0", "255.255.255.255"]
V6 = ["2001:db8::1", "2001:db8::2", "2001:db8:5::9", "::ffff:198.18.0.1", "fe80::1"]


@st.composite
def tcp_options(draw):
    if draw(st.booleans()):
        ts = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))))
        return packets.tcp_options(
            mss=draw(st.one_of(st.none(), st.integers(0, 65535))),
            wscale=draw(st.one_of(st.none(), st.integers(0, 255))),
            sack=draw(st.booleans()),
            ts=ts,
            layout=draw(st.sampled_from(["linux", "windows", "macos"])),
        )
    raw = draw(st.binary(max_size=40))
    return raw + b"\x00" * (-len(raw) % 4)


# Options of IPv6 options headers: padding and unknown options to skip,
# which Linux takes; then unknown options to discard on, router alert
# (Linux acts on it), jumbo payload, PadN with data.
TLVS = [
    b"\x00",
    b"\x01\x00",
    b"\x01\x02\x00\x00",
    b"\x01\x04\x00\x00\x00\x00",
    b"\x1e\x02ab",
    b"\x1e\x00",
] * 3
TLVS += [b"\x05\x02\x00\x00", b"\x9e\x01x", b"\xc2\x04abcd", b"\x01\x01\x07"]


@st.composite
def ext_headers(draw):
    """An IPv6 extension header chain as packets.tcp_frame takes it (0-6
    headers, lengths right but anything else as it falls)."""
    chain = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 5, 6]))):
        kind = draw(st.sampled_from([0, 60, 60, 60, 43, 44, 51]))
        if kind in (0, 60):
            body = b"".join(draw(st.lists(st.sampled_from(TLVS), max_size=3)))
        elif kind == 43:  # type, segments left, then addresses or anything
            body = bytes(
                [draw(st.sampled_from([0, 0, 1, 2, 3, 4, 253])), draw(st.sampled_from([0, 0, 0, 1]))]
            )
            body += bytes(4) + bytes(16) * draw(st.integers(0, 1))
        elif kind == 44:  # offset and M, the identification
            body = draw(st.sampled_from([0, 1, 8, 9, 0x10])).to_bytes(2, "big") + bytes(4)
        else:
            body = draw(st.binary(min_size=6, max_size=6))
        fill = -(len(body) + 2) % 8  # to a whole header: Pad1 or PadN
        body += b"\x00" if fill == 1 else b"\x01" + bytes([fill - 2]) + bytes(fill - 2) if fill else b""
        chain.append((kind, body))
    return chain


@st.composite
def frames(draw):
    v6 = draw(st.booleans())
    src, dst = draw(st.sampled_from(V6 if v6 else V4)), draw(st.sampled_from(V6 if v6 else V4))
    flags = draw(
        st.one_of(
            st.sampled_from([0x02, 0x10, 0x18, 0x11, 0x04, 0x14, 0x12, 0x03, 0x06, 0x00]), st.integers(0, 255)
        )
    )
    frame = packets.tcp_frame(
        src,
        dst,
        draw(st.integers(0, 65535)),
        draw(st.sampled_from([PORT, PORT, PORT_NO_LISTENER, 80])),
        seq=draw(st.integers(0, 2**32 - 1)),
        ack=draw(st.integers(0, 2**32 - 1)),
        flags=flags,
        options=draw(tcp_options()),
        payload=draw(st.binary(max_size=24)),
        vlans=tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=2))),
        ip_options=b"" if v6 else draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 3])),
        ext=draw(ext_headers()) if v6 and draw(st.booleans()) else (),
        frag_word=None if v6 else draw(st.sampled_from([None, None, 0x2000, 0x0001, 0x2001])),
    )
    frame = bytearray(frame)
    l3 = 14 + 4 * (frame[12:14] in (b"\x81\x00", b"\x88\xa8")) * (
        1 + (frame[16:18] in (b"\x81\x00", b"\x88\xa8"))
    )
    for _ in range(draw(st.integers(0, 3))):  # mutations
        what = draw(
            st.sampled_from(["byte", "ethertype", "ihl", "length", "frag", "nexthdr", "doff", "proto"])
        )
        if what == "byte":
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] = draw(st.integers(0, 255))
        elif what == "ethertype":
            frame[l3 - 2 : l3] = draw(
                st.sampled_from([b"\x08\x06", b"\x86\xdd", b"\x08\x00", b"\x81\x00", b"\xff\xff"])
            )
        elif what == "ihl" and not v6:
            frame[l3] = 0x40 | draw(st.integers(0, 15))
        elif what == "length":
            at = l3 + (4 if v6 else 2)
            frame[at : at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif what == "frag" and not v6:
            frame[l3 + 6 : l3 + 8] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif what == "nexthdr" and v6:
            frame[l3 + 6] = draw(st.sampled_from([0, 43, 44, 58, 17, 6]))
        elif what == "proto" and not v6:
            frame[l3 + 9] = draw(st.sampled_from([1, 17, 6, 47]))
        elif what == "doff":
            tcp = l3 + (40 if v6 else (frame[l3] & 0xF) * 4)
            if tcp + 12 < len(frame):
                frame[tcp + 12] = draw(st.integers(0, 15)) << 4
    if draw(st.integers(0, 4)) == 0:  # a truncation
        frame = frame[: draw(st.integers(14, len(frame)))]
    return bytes(frame)


@st.composite
def cookie_acks(draw, prog):
    """A third ACK made from a real SYN-ACK of the program, maybe mutated."""
    v6 = draw(st.booleans())
    syn = packets.tcp_frame(
        "2001:db8::1" if v6 else "198.18.0.1",
        "2001:db8::2" if v6 else "198.18.0.2",
        draw(st.integers(1, 65535)),
        PORT,
        seq=draw(st.integers(0, 2**32 - 1)),
        options=draw(tcp_options()),
    )
    verdict, synack, _ = libbpf.test_run(prog.xdp_fd, syn)
    if verdict != libbpf.XDP_TX:
        return syn
    sa = packets.parse_frame(synack)
    ack = bytearray(
        packets.tcp_frame(
            sa.dst,
            sa.src,
            sa.dport,
            sa.sport,
            seq=sa.ack,
            ack=(sa.seq + 1) % 2**32,
            flags=draw(st.sampled_from([0x10, 0x18, 0x11])),
            options=draw(tcp_options()),
            payload=draw(st.binary(max_size=16)),
        )
    )
    if draw(st.booleans()):
        i = draw(st.integers(0, len(ack) - 1))
        ack[i] ^= draw(st.integers(1, 255))
    return bytes(ack)


def check(prog, maps, frame):
    cfg = maps.config.lookup(0)
    want = expect(frame, keys(maps)[1], (cfg.ext_opts, cfg.ext_len8))
    before = maps.read_counters()
    verdict, out = run(prog.xdp_fd, frame)
    after = maps.read_counters()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta == {"packets": 1, **{c: 1 for c in want.counters}}, (want, frame.hex())
    if want.reset:
        assert (verdict, out) == (libbpf.XDP_TX, expected_reset(frame, maps)), frame.hex()
    elif want.verdict == TX:
        assert verdict == libbpf.XDP_TX, frame.hex()
        s = packets.parse_frame(out)
        assert out == expected_synack(frame, maps, s.options.get("ts", (0, 0))[0])[0], frame.hex()
    elif want.handoff:
        assert verdict == libbpf.XDP_PASS
        assert out == frame and handed_off(maps, frame)
        prog.bpf[b"handoffs"].clear()  # the next frame of this 4-tuple is on its own
    else:
        assert verdict == (libbpf.XDP_PASS if want.verdict == PASS else libbpf.XDP_DROP), frame.hex()
        assert want.verdict == DROP or out == frame


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
def fuzzed(datapath, unit_ns):
    """cookies_only with an RST budget no run spends (the model cannot
    count time)."""
    prog, maps = datapath
    reset(prog, maps, syncookies_only=1, rst_rate=10_000_000)
    with netns.netns(unit_ns):
        yield prog, maps


@FUZZ
@given(frame=frames())
def test_fuzzed_frames(fuzzed, frame):
    check(*fuzzed, frame)


@settings(FUZZ, max_examples=max(200, EXAMPLES // 10))
@given(data=st.data())
def test_fuzzed_cookie_acks(fuzzed, data):
    prog, maps = fuzzed
    check(prog, maps, data.draw(cookie_acks(prog)))


@settings(FUZZ, max_examples=max(200, EXAMPLES // 10))
@given(data=st.data())
def test_fuzzed_extension_header_chains(fuzzed, data):
    """IPv6 SYNs and ACKs behind random extension header chains, unmutated:
    a sixth of them is one the data path answers."""
    prog, maps = fuzzed
    frame = packets.tcp_frame(
        data.draw(st.sampled_from(V6[:3])),
        data.draw(st.sampled_from(V6[:3])),
        data.draw(st.integers(1, 65535)),
        PORT,
        seq=data.draw(st.integers(0, 2**32 - 1)),
        ack=data.draw(st.integers(0, 2**32 - 1)),
        flags=data.draw(st.sampled_from([0x02, 0x02, 0x10, 0x04])),
        options=data.draw(tcp_options()),
        ext=data.draw(ext_headers()),
    )
    check(prog, maps, frame)
