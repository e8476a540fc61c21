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


# The model follows the data path's parse step by step (L2, IPv4 or IPv6,
# TCP, then the segment's kind), one branch per outcome, so that each
# line can be held against the C: split up, it would no longer read so.
def expect(frame, keys):  # noqa: C901
    """Expect for frame (bytes), keys: the two 16-byte cookie keys."""
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
        if frag & 0x3FFF:  # MF or an offset
            return Expect(PASS, "passed")
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
        if frame[off + 6] != 6:  # ICMPv6, extension headers, anything else
            return Expect(PASS, "passed")
        src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
        l4, l4_len = off + 40, plen
    else:
        return Expect(PASS, "passed")

    if l4 > 128 or l4 + 20 > n or l4_len < 20:
        return Expect(PASS, "malformed")
    doff = (frame[l4 + 12] >> 4) * 4
    if doff < 20 or doff > l4_len:
        return Expect(PASS, "malformed")
    sport, dport, seq, ack = struct.unpack_from("!HHII", frame, l4)
    flags = frame[l4 + 13]
    if dport not in (PORT, PORT_NO_LISTENER):
        return Expect(PASS, "passed")

    SYN, RST, FIN, ACK = 0x02, 0x04, 0x01, 0x10
    if flags & (SYN | ACK | RST | FIN) == SYN:
        kind = "syn"
    elif flags & RST:
        kind = "rst"
    elif flags & (SYN | ACK) == ACK:
        kind = "ack"
    else:
        return Expect(PASS, "passed")
    if dport == PORT_NO_LISTENER:
        return Expect(PASS, "nolistener")
    if kind == "syn":
        if packets.parse_options(frame[l4 + 20 : l4 + doff]).get("signed"):
            return Expect(PASS, "signed")
        return Expect(TX, "sendcookie")
    if kind == "rst":
        return Expect(PASS, "badrst")
    if cookie.check_ack(keys, src, dst, sport, dport, seq, ack):
        return Expect(PASS, "recvcookie", handoff=True)
    return Expect(TX, "badcookie", "rstsent", reset=True)
