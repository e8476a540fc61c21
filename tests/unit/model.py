"""What the data path must answer, computed in Python from the frame, the
config and the keys. Tests hold the C program's output to these bytes."""

import ctypes

from synguard import layout, libbpf, packets
from synguard.lab import cookie
from synguard.packets import ACK, CWR, ECE, RST, SYN, ack_for  # noqa: F401 (the tests import it from here)

CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8::2"


def keys(maps):
    """(active slot, [key0 bytes, key1 bytes]) read from the secrets map."""
    s = maps.secrets.lookup(0)
    return s.active, [cookie.key_bytes(k.k0, k.k1) for k in s.keys]


def run(prog_fd, frame):
    verdict, out, _ns = libbpf.test_run(prog_fd, frame)
    return verdict, out


def syn(client=CLIENT4, server=SERVER4, sport=40000, dport=8080, seq=0x12345678, **kw):
    kw.setdefault("options", packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(777, 0)))
    return packets.tcp_frame(client, server, sport, dport, seq=seq, flags=SYN, **kw)


def negotiated(s, cfg, kernel=False):
    """(mss, window scale offered, sack, timestamps, ecn) of our SYN-ACK for
    the parsed SYN s. With the kernel's cookies window scale and SACK need
    timestamps to carry them (bpf/kcookie.h)."""
    v6 = s.version == 6
    o = s.options
    mss = min(o.get("mss", 1220 if v6 else 536), cfg.mss6 if v6 else cfg.mss4)
    ts = "ts" in o and bool(cfg.flags & layout.CF_TIMESTAMPS)
    ws = "wscale" in o and bool(cfg.flags & layout.CF_WSCALE) and (ts or not kernel)
    sack = bool(o.get("sack")) and bool(cfg.flags & layout.CF_SACK) and (ts or not kernel)
    return mss, ws, sack, ts, ecn_setup(s, cfg, ts)


def synack_frame(s, cfg, seq, tsval, flowlabel, mss, ws, sack, ts, ecn):
    """Our SYN-ACK for the parsed SYN s, with what was negotiated."""
    v6 = s.version == 6
    opts = packets.tcp_options(
        mss=max(mss, layout.mss_table(v6)[0]),
        wscale=cfg.wscale if ws else None,
        sack=sack,
        ts=(tsval, s.options["ts"][0]) if ts else None,
    )
    return packets.tcp_frame(
        s.dst,
        s.src,
        s.dport,
        s.sport,
        seq=seq,
        ack=(s.seq + 1) & 0xFFFFFFFF,
        flags=SYN | ACK | (ECE if ecn else 0),
        options=opts,
        window=cfg.window,
        src_mac=s.dst_mac,
        dst_mac=s.src_mac,
        vlans=s.vlans,
        ttl=cfg.ttl,
        flowlabel=flowlabel,
    )


def expected_synack(syn_frame, maps, tsval=0):
    """(exact SYN-ACK frame, the cookie's 64-bit hash). tsval is our
    timestamp, whose clock part the caller takes from the output."""
    s = packets.parse_frame(syn_frame)
    cfg = maps.config.lookup(0)
    active, ks = keys(maps)
    v6 = s.version == 6
    mss, ws, sack, ts, ecn = negotiated(s, cfg)
    mss_idx = cookie.mss_index(mss, v6)
    meta = cookie.meta_byte(mss_idx, cookie.wscale_index(s.options["wscale"]) if ws else 0, sack, active)
    h = cookie.flow_hash(ks[active], s.src, s.dst, s.sport, s.dport, s.seq, meta)
    seq = (h & 0xFFFFFF) << 8 | meta
    flowlabel = (h >> 24) & 0xFFFFF if v6 else 0
    return synack_frame(s, cfg, seq, tsval, flowlabel, mss, ws, sack, ts, ecn), h


def expected_kernel_synack(syn_frame, maps, iss, tsval):
    """(exact SYN-ACK frame, the options its TSval must carry) with the
    kernel's cookies: the ISS the kernel minted and our TSval, whose clock
    part the caller takes from the output."""
    s = packets.parse_frame(syn_frame)
    cfg = maps.config.lookup(0)
    mss, ws, sack, ts, ecn = negotiated(s, cfg, kernel=True)
    options = (min(s.options["wscale"], 14) if ws else 0xF) | sack << 4 | ecn << 5
    return synack_frame(s, cfg, iss, tsval, 0, mss, ws, sack, ts, ecn), options


def expected_reset(frame, maps):
    """The RST for a segment nobody knows (frame, from the client, with ACK
    set), as Linux's tcp_v4_send_reset writes it: seq from the segment's
    ACK number, no ACK of its own, no options, window 0."""
    s = packets.parse_frame(frame)
    return packets.tcp_frame(
        s.dst,
        s.src,
        s.dport,
        s.sport,
        seq=s.ack,
        flags=RST,
        window=0,
        src_mac=s.dst_mac,
        dst_mac=s.src_mac,
        vlans=s.vlans,
        ttl=maps.config.lookup(0).ttl,
    )


def ecn_setup(s, cfg, ts):
    """The kernel's rule (tcp_ecn_create_request) for classic ECN: the SYN
    (parsed: s) has ECE and CWR, its IP header is not ECN-capable or a
    reserved TCP bit is set, net.ipv4.tcp_ecn is on; synguard also wants
    timestamps, which carry the choice to the ACK."""
    tos = s.ip_header[1] if s.version == 4 else (int.from_bytes(s.ip_header[:4], "big") >> 20) & 0xFF
    res1 = s.doff_byte & 0x0F
    return bool(
        s.flags & ECE and s.flags & CWR and (tos & 3 == 0 or res1) and cfg.flags & layout.CF_ECN and ts
    )


def flow_key(frame):
    """The syncache key (layout.Flow) of a frame from the client."""
    s = packets.parse_frame(frame)
    k = layout.Flow()
    raw = s.src.packed + s.dst.packed
    ports = s.sport.to_bytes(2, "big") + s.dport.to_bytes(2, "big")
    ctypes.memmove(k.w, raw + ports, len(raw) + 4)
    k.ipv6 = s.version == 6
    return k


def entry(maps, frame):
    """The syncache entry for the client frame's 4-tuple, or None."""
    try:
        return maps.syncache.lookup(flow_key(frame))
    except OSError:
        return None


def handoff(maps, frame):
    """The hand-off XDP left for the client frame's 4-tuple (struct
    sg_handoff), or None."""
    try:
        return maps.handoffs.lookup(flow_key(frame))
    except OSError:
        return None


def handed_off(maps, ack):
    """XDP left a pending hand-off for exactly this ACK (its seq and ack)."""
    h, a = handoff(maps, ack), packets.parse_frame(ack)
    return bool(h and h.pending and (h.isn, h.iss) == ((a.seq - 1) & 0xFFFFFFFF, (a.ack - 1) & 0xFFFFFFFF))


def tsval_of(frame):
    return packets.parse_frame(frame).options["ts"][0]
