"""Ethernet/IPv4/IPv6/TCP frames: built and parsed in one place.

Used by the demo's flood generator, the tests (frames through
BPF_PROG_TEST_RUN, expected SYN-ACKs) and the benchmarks. Checksums are
computed here independently of the C code, so a test can hold the data
path's arithmetic against them.
"""

import ipaddress
import struct
from dataclasses import dataclass, field

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
IPPROTO_TCP = 6

FIN, SYN, RST, PSH, ACK, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x40, 0x80

OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACKPERM, OPT_TS = 0, 1, 2, 3, 4, 8
OPT_MD5SIG, OPT_AO = 19, 29

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")


def checksum(data):
    """RFC 1071 Internet checksum of data (bytes)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src, dst, length):
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_TCP, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, IPPROTO_TCP)


def tcp_options(mss=None, wscale=None, sack=False, ts=None, layout="linux"):
    """TCP options as bytes, padded to 4. ts = (tsval, tsecr).

    layout "linux" is what Linux puts in a SYN (MSS, SACK-permitted,
    timestamps, NOP, window scale); "windows" and "macos" reorder them the
    way those stacks do, to exercise the parser.
    """
    o_mss = struct.pack("!BBH", OPT_MSS, 4, mss) if mss is not None else b""
    o_ws = struct.pack("!BBB", OPT_WSCALE, 3, wscale) if wscale is not None else b""
    o_sack = bytes([OPT_SACKPERM, 2]) if sack else b""
    o_ts = struct.pack("!BBII", OPT_TS, 10, *ts) if ts is not None else b""
    nop = bytes([OPT_NOP])
    if layout == "linux":
        if ts is not None:
            out = o_mss + (o_sack or nop * 2) + o_ts
        else:
            out = o_mss + (nop * 2 + o_sack if sack else b"")
        if o_ws:
            out += nop + o_ws
    elif layout == "windows":
        out = o_mss + (nop + o_ws if o_ws else b"") + (nop * 2 + o_sack if sack else b"")
        if o_ts:
            out += nop * 2 + o_ts
    elif layout == "macos":
        out = o_mss + (nop + o_ws if o_ws else b"") + (nop * 2 + o_ts if o_ts else b"") + o_sack
    else:
        raise ValueError("unknown layout %r" % layout)
    return out + bytes([OPT_EOL]) * (-len(out) % 4)


def tcp_frame(
    src,
    dst,
    sport,
    dport,
    seq=0,
    ack=0,
    flags=SYN,
    options=b"",
    payload=b"",
    window=64240,
    src_mac=CLIENT_MAC,
    dst_mac=SERVER_MAC,
    vlans=(),
    ttl=64,
    ip_options=b"",
    flowlabel=0,
    l2=None,
    df=True,
    tos=0,
    reserved=0,
    ext=(),
    frag_word=None,
):
    """A complete Ethernet frame carrying one TCP segment, checksums right.

    vlans: VLAN ids, outermost first (the outer one tagged 802.1ad when
    there are two, as QinQ does). l2: the Ethernet header and tags as raw
    bytes instead (src_mac, dst_mac and vlans are then ignored). ext: IPv6
    extension headers before TCP, each (type, body): body is the header
    after its next-header and length bytes (a length of 6 + 8n bytes; the
    fragment header's reserved byte comes out 0). frag_word: IPv4 flags and
    fragment offset instead of DF (df)."""
    src, dst = _address(src), _address(dst)
    if len(options) % 4 or len(ip_options) % 4:
        raise ValueError("options must be padded to 4 bytes")
    doff = (20 + len(options)) // 4
    tcp_len = 20 + len(options) + len(payload)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4 | reserved, flags, window, 0, 0)
    tcp += options + payload
    csum = checksum(_pseudo_header(src, dst, tcp_len) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]

    if src.version == 4:
        ihl = 5 + len(ip_options) // 4
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x40 | ihl,
                tos,
                ihl * 4 + tcp_len,
                0,
                frag_word if frag_word is not None else 0x4000 if df else 0,  # DF
                ttl,
                IPPROTO_TCP,
                0,
                src.packed,
                dst.packed,
            )
            + ip_options
        )
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        ethertype = ETH_P_IP
    else:
        chain, types = b"", [t for t, _ in ext] + [IPPROTO_TCP]
        for (_, body), next_type in zip(ext, types[1:]):
            if (len(body) + 2) % 8:
                raise ValueError("an extension header is a multiple of 8 bytes")
            chain += bytes([next_type, (len(body) + 2) // 8 - 1]) + body
        ip = struct.pack(
            "!IHBB16s16s",
            0x60000000 | tos << 20 | flowlabel,
            len(chain) + tcp_len,
            types[0],
            ttl,
            src.packed,
            dst.packed,
        )
        ip += chain
        ethertype = ETH_P_IPV6

    if l2 is None:
        l2 = _l2_header(dst_mac, src_mac, vlans, ethertype)
    return bytes(l2) + ip + tcp


def ack_for(synack_frame, client_tsval=778, payload=b""):
    """The client's third ACK for a SYN-ACK frame, echoing its timestamp if
    it had one (the tests' and benchmarks' hand-off frames)."""
    sa = parse_frame(synack_frame)
    opts = b""
    if "ts" in sa.options:
        opts = tcp_options(ts=(client_tsval, sa.options["ts"][0]))
    return tcp_frame(
        sa.dst,
        sa.src,
        sa.dport,
        sa.sport,
        seq=sa.ack,
        ack=(sa.seq + 1) & 0xFFFFFFFF,
        flags=ACK,
        options=opts,
        payload=payload,
        src_mac=sa.dst_mac,
        dst_mac=sa.src_mac,
        vlans=sa.vlans,
    )


def _address(a):
    # ip_address() of an address object goes through its string form, which
    # was half the cost of the syncache timer's retransmissions.
    return a if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(a)


def _l2_header(dst_mac, src_mac, vlans, ethertype):
    # Each tag is (TCI, next type); the TPID of a tag sits where the
    # previous ethertype was.
    types = [ETH_P_8021AD if len(vlans) == 2 and i == 0 else ETH_P_8021Q for i in range(len(vlans))]
    types.append(ethertype)
    out = dst_mac + src_mac + struct.pack("!H", types[0])
    for vid, next_type in zip(vlans, types[1:]):
        out += struct.pack("!HH", vid, next_type)
    return out


def icmp_unreachable(quoted, code=1, src_mac=CLIENT_MAC, dst_mac=SERVER_MAC, router=None):
    """An ICMP (IPv4: type 3) or ICMPv6 (type 1) destination unreachable
    from `router` (default: the quoted segment's destination) to the quoted
    segment's source, quoting the IP header and the first bytes of `quoted`
    (an Ethernet frame as tcp_frame makes, without VLAN tags)."""
    q = parse_frame(quoted)
    ip_and_tcp = quoted[14:]
    src = ipaddress.ip_address(router) if router else q.dst
    if q.version == 4:
        body = ip_and_tcp[: (ip_and_tcp[0] & 0xF) * 4 + 8]
        icmp = struct.pack("!BBHI", 3, code, 0, 0) + body
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src.packed, q.src.packed)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + icmp
    body = ip_and_tcp[: 40 + 8]
    icmp = struct.pack("!BBHI", 1, code, 0, 0) + body
    pseudo = src.packed + q.src.packed + struct.pack("!IxxxB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, src.packed, q.src.packed)
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6) + ip + icmp


@dataclass
class Segment:
    """A parsed frame. ip_csum_ok / tcp_csum_ok are checked here, in Python."""

    dst_mac: bytes
    src_mac: bytes
    vlans: list
    version: int
    src: object
    dst: object
    ttl: int
    ip_csum_ok: bool
    flowlabel: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urg: int
    tcp_csum_ok: bool
    raw_options: bytes
    payload: bytes
    options: dict = field(default_factory=dict)
    ip_header: bytes = b""
    doff_byte: int = 0  # data offset and the reserved bits (AE among them)


def parse_options(raw):
    """Options as a dict: mss, wscale, sack, ts=(tsval, tsecr), order=[kinds]."""
    out, i, order = {}, 0, []
    while i < len(raw):
        kind = raw[i]
        if kind == OPT_EOL:
            break
        order.append(kind)
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            break
        size, body = raw[i + 1], raw[i + 2 : i + raw[i + 1]]
        if kind == OPT_MSS and size == 4:
            out["mss"] = struct.unpack("!H", body)[0]
        elif kind == OPT_WSCALE and size == 3:
            out["wscale"] = body[0]
        elif kind == OPT_SACKPERM and size == 2:
            out["sack"] = True
        elif kind == OPT_TS and size == 10:
            out["ts"] = struct.unpack("!II", body)
        elif (kind == OPT_MD5SIG and size == 18) or (kind == OPT_AO and size >= 4):
            out["signed"] = True  # as Linux's tcp_parse_auth_options takes them
        i += size
    out["order"] = order
    return out


IPV6_EXT_HEADERS = (0, 43, 44, 60)  # hop-by-hop, routing, fragment, destination options


def parse_frame(frame):
    """Parse an Ethernet frame carrying TCP over IPv4 or IPv6 (behind IPv6
    extension headers of IPV6_EXT_HEADERS, skipped). Raises ValueError on
    anything else."""
    dst_mac, src_mac = frame[0:6], frame[6:12]
    (etype,) = struct.unpack_from("!H", frame, 12)
    off, vlans = 14, []
    while etype in (ETH_P_8021Q, ETH_P_8021AD):
        vid, etype = struct.unpack_from("!HH", frame, off)
        vlans.append(vid)
        off += 4
    if etype == ETH_P_IP:
        ihl = (frame[off] & 0xF) * 4
        ip = frame[off : off + ihl]
        (tot,) = struct.unpack_from("!H", ip, 2)
        ttl, proto = ip[8], ip[9]
        src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
        ip_ok = checksum(ip) == 0
        tcp = frame[off + ihl : off + tot]
        flowlabel = 0
        version = 4
    elif etype == ETH_P_IPV6:
        ip = frame[off : off + 40]
        (vtf, plen, proto, ttl) = struct.unpack_from("!IHBB", ip, 0)
        src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
        tcp = frame[off + 40 : off + 40 + plen]
        while proto in IPV6_EXT_HEADERS:
            if len(tcp) < 8:
                raise ValueError("truncated extension header")
            proto, size = tcp[0], 8 if proto == 44 else (tcp[1] + 1) * 8
            tcp = tcp[size:]
        ip_ok, flowlabel, version = True, vtf & 0xFFFFF, 6
    else:
        raise ValueError("not IP: ethertype %#x" % etype)
    if proto != IPPROTO_TCP:
        raise ValueError("not TCP")
    sport, dport, seq, ack, doff_b, flags, window, _csum, urg = struct.unpack_from("!HHIIBBHHH", tcp, 0)
    doff = (doff_b >> 4) * 4
    tcp_ok = checksum(_pseudo_header(src, dst, len(tcp)) + tcp) == 0
    raw = tcp[20:doff]
    return Segment(
        dst_mac,
        src_mac,
        vlans,
        version,
        src,
        dst,
        ttl,
        ip_ok,
        flowlabel,
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
        urg,
        tcp_ok,
        raw,
        tcp[doff:],
        parse_options(raw),
        ip,
        doff_b,
    )
