"""What synguard_xdp must do with any frame, in Python, for the fuzz test.

The same rules as bpf/parse.h and bpf/xdp_synguard.c, written from the
documented behaviour rather than from the C: parse or call it malformed,
leave what is not TCP to a protected port alone, answer SYNs, judge ACKs,
note RSTs, reset what nobody knows. The model assumes cookies_only (no
syncache entries), no reflection limit, an RST budget never spent, a
listener on PORT, none on PORT_NO_LISTENER, and no other socket of the
fuzzed 4-tuples.
"""

import struct

from conftest import PORT, PORT_NO_LISTENER
from synguard import packets
from synguard.lab import cookie

PASS, DROP, TX = "pass", "drop", "tx"


class Expect:
    """verdict; the counters it moves beside packets; a hand-off; TX: a
    SYN-ACK, or with reset an RST."""

    def __init__(self, verdict, *counters, handoff=False, reset=False):
        self.verdict, self.counters, self.handoff, self.reset = verdict, counters, handoff, reset

    def __repr__(self):
        return "Expect(%s, %s%s)" % (
            self.verdict,
            ", ".join(self.counters),
            ", handoff" if self.handoff else ", reset" if self.reset else "",
        )


def options_header_ok(frame, off, size, hbh, max_opts):
    """An IPv6 options header of size bytes at off is one Linux takes
    (ip6_parse_tlv) and the data path looks through: padding (zeros, at
    most 7 bytes in a row) and up to max_opts unknown options of the
    "skip" kind, at most 8 options in all. The data path reads 8 bytes at
    each option: where the frame has fewer, the header is not its, unless
    it is the 8-byte header of one PadN, which it reads at once."""
    if size == 8 and frame[off + 2 : off + 8] == b"\x01\x04\x00\x00\x00\x00":
        return True
    pos, pad, opts = 2, 0, 0
    for _ in range(8):
        if pos >= size:
            break
        if off + pos + 8 > len(frame):
            return False
        t = frame[off + pos : off + pos + 8]
        if t[0] == 0:  # Pad1
            pad += 1
            if pad > 7:
                return False
            pos += 1
            continue
        optlen = t[1] + 2
        if pos + optlen > size:
            return False
        if t[0] == 1:  # PadN
            pad += optlen
            if pad > 7 or any(t[2:optlen]):
                return False
        else:
            opts += 1
            if t[0] & 0xC0 or (hbh and t[0] in (5, 7, 0x31)) or opts > max_opts:
                return False  # "discard", or router alert, CALIPSO, IOAM
            pad = 0
        pos += optlen
    return pos == size


def ipv6_chain(frame, nexthdr, start, plen, limits):
    """(TCP offset, first fragment) behind the extension headers at start,
    or None where the kernel must judge the frame (Linux may refuse, act on
    or forward it, or the chain is beyond the data path's bound)."""
    max_opts, len8 = limits
    off, frag = start, False
    for i in range(5):
        if nexthdr == 6:
            break
        if off > 255 or off + 8 > len(frame):
            return None
        size = 8 if nexthdr == 44 else (frame[off + 1] + 1) * 8
        if off + size > 255 or off + size - start > plen:
            return None
        if nexthdr in (0, 60):  # hop-by-hop (first only), destination options
            if (nexthdr == 0 and i) or frame[off + 1] >= len8:
                return None
            if not options_header_ok(frame, off, size, nexthdr == 0, max_opts):
                return None
        elif nexthdr == 43:  # routing: none left to visit, a type Linux skips
            if frame[off + 3] or frame[off + 2] in (2, 3, 4):
                return None
        elif nexthdr == 44:  # fragment: the first, whole 8-byte units
            (word,) = struct.unpack_from("!H", frame, off + 2)
            if word & 0xFFF8 or (word & 1 and (plen - (off + 8 - start)) % 8):
                return None
            frag = bool(word & 1)
        else:
            return None
        nexthdr = frame[off]
        off += size
    return (off, frag) if nexthdr == 6 else None


# The model follows the data path's parse step by step (L2, IPv4 or IPv6,
# TCP, then the segment's kind), one branch per outcome, so that each
# line can be held against the C: split up, it would no longer read so.
def expect(frame, keys, limits=(8, 255)):  # noqa: C901
    """Expect for frame (bytes), keys: the two 16-byte cookie keys, limits:
    sg_config's (ext_opts, ext_len8)."""
    n = len(frame)
    if n < 14:
        return Expect(PASS, "malformed")
    (etype,) = struct.unpack_from("!H", frame, 12)
    off = 14
    for _ in range(2):
        if etype not in (0x8100, 0x88A8):
            break
        if off + 4 > n:
            return Expect(PASS, "malformed")
        (etype,) = struct.unpack_from("!H", frame, off + 2)
        off += 4

    if etype == 0x0800:
        if off + 20 > n:
            return Expect(PASS, "malformed")
        ver, ihl = frame[off] >> 4, (frame[off] & 0xF) * 4
        (tot,) = struct.unpack_from("!H", frame, off + 2)
        if ver != 4 or ihl < 20 or tot < ihl or off + tot > n:
            return Expect(PASS, "malformed")
        (frag,) = struct.unpack_from("!H", frame, off + 6)
        if frag & 0x1FFF or (frag & 0x2000 and (tot - ihl) % 8):  # a later fragment
            return Expect(PASS, "passed")
        first_frag, ext = bool(frag & 0x2000), False
        if frame[off + 9] != 6:  # ICMP included: no entries to mark
            return Expect(PASS, "passed")
        src, dst = frame[off + 12 : off + 16], frame[off + 16 : off + 20]
        l4, l4_len = off + ihl, tot - ihl
    elif etype == 0x86DD:
        if off + 40 > n:
            return Expect(PASS, "malformed")
        (plen,) = struct.unpack_from("!H", frame, off + 4)
        if frame[off] >> 4 != 6 or off + 40 + plen > n:
            return Expect(PASS, "malformed")
        if frame[off + 6] == 58:  # ICMPv6: no entries to mark
            return Expect(PASS, "passed")
        chain = ipv6_chain(frame, frame[off + 6], off + 40, plen, limits)
        if chain is None:
            return Expect(PASS, "passed")
        src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
        (l4, first_frag), ext = chain, chain[0] != off + 40
        l4_len = plen - (l4 - off - 40)
    else:
        return Expect(PASS, "passed")

    if l4 > 255 or l4 + 20 > n or l4_len < 20:
        return Expect(PASS, "malformed")
    doff = (frame[l4 + 12] >> 4) * 4
    if doff < 20 or doff > l4_len:
        return Expect(PASS, "malformed")
    sport, dport, seq, ack = struct.unpack_from("!HHII", frame, l4)
    flags = frame[l4 + 13]
    if dport not in (PORT, PORT_NO_LISTENER):
        return Expect(PASS, "passed")

    SYN, RST, FIN, ACK = 0x02, 0x04, 0x01, 0x10
    # Behind extension headers or in a first fragment: counted, then judged
    # as any (only a SYN from a fragment).
    seen = ("exthdr",) * ext + ("fragment",) * first_frag
    if flags & (SYN | ACK | RST | FIN) == SYN:
        kind = "syn"
    elif first_frag:
        return Expect(PASS, "passed")
    elif flags & RST:
        kind, seen = "rst", ()
    elif flags & (SYN | ACK) == ACK:
        kind = "ack"
    else:
        return Expect(PASS, "passed")
    if dport == PORT_NO_LISTENER:
        return Expect(PASS, "nolistener", *seen)
    if kind == "syn":
        if packets.parse_options(frame[l4 + 20 : l4 + doff]).get("signed"):
            return Expect(PASS, "signed", *seen)
        return Expect(TX, "sendcookie", *seen)
    if kind == "rst":
        return Expect(PASS, "badrst")
    if cookie.check_ack(keys, src, dst, sport, dport, seq, ack):
        return Expect(PASS, "recvcookie", *seen, handoff=True)
    return Expect(TX, "badcookie", "rstsent", *seen, reset=True)
