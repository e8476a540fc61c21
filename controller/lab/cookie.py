"""The SYN cookie in pure Python: the reference the C data path is held to.

Same layout as bpf/cookie.h (read its comment for the picture): the ISS is
24 bits of SipHash-2-4 over the client's 4-tuple, its ISN and the low byte,
then the low byte itself (MSS index, window-scale index, SACK, key slot).
"""

import ipaddress
import struct

from .. import layout

_MASK = (1 << 64) - 1


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(key, msg):
    """SipHash-2-4 of bytes msg under a 16-byte key, as a 64-bit int."""
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n):
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(msg) % 8
    for (m,) in struct.iter_unpack("<Q", msg[: len(msg) - tail]):
        v3 ^= m
        rounds(2)
        v0 ^= m
    b = (len(msg) & 0xFF) << 56 | int.from_bytes(msg[len(msg) - tail :], "little")
    v3 ^= b
    rounds(2)
    v0 ^= b
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def key_bytes(k0, k1):
    """The 16 key bytes for a struct sg_key's two 64-bit words."""
    return struct.pack("<QQ", k0, k1)


def round_down_index(value, table):
    """Index of the largest table entry <= value (entry 0 is the floor)."""
    idx = 0
    for i in range(1, len(table)):
        if table[i] <= value:
            idx = i
    return idx


def mss_index(mss, ipv6):
    return round_down_index(mss, layout.mss_table(ipv6))


def wscale_index(wscale):
    """Cookie index for the peer's window scale; None = no option (index 0)."""
    if wscale is None:
        return 0
    return round_down_index(min(wscale, 14), layout.wscale_table())


def meta_byte(mss_idx, ws_idx, sack, slot):
    return mss_idx << 5 | ws_idx << 2 | int(bool(sack)) << 1 | slot


def decode_meta(meta, ipv6):
    """(mss, snd_wscale or None, sack, slot) that a cookie's low byte says."""
    ws_idx = (meta >> 2) & 7
    return (
        layout.mss_table(ipv6)[(meta >> 5) & 7],
        layout.wscale_table()[ws_idx] if ws_idx else None,
        bool((meta >> 1) & 1),
        meta & 1,
    )


def flow_hash(key, client, server, cport, sport, isn, meta):
    """The 64-bit SipHash the cookie, flow label and TS offset come from."""
    client, server = ipaddress.ip_address(client), ipaddress.ip_address(server)
    msg = client.packed + server.packed + struct.pack("!HHI", cport, sport, isn) + bytes([meta])
    return siphash24(key, msg)


def make_iss(key, client, server, cport, sport, isn, meta):
    return (flow_hash(key, client, server, cport, sport, isn, meta) & 0xFFFFFF) << 8 | meta


def check_ack(keys, client, server, cport, sport, seq, ack):
    """True if an ACK (seq, ack as on the wire) carries a valid cookie under
    keys[slot] (keys: the two 16-byte keys)."""
    cookie = (ack - 1) & 0xFFFFFFFF
    meta = cookie & 0xFF
    isn = (seq - 1) & 0xFFFFFFFF
    return make_iss(keys[meta & 1], client, server, cport, sport, isn, meta) == cookie
