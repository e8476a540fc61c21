"""What the C headers in bpf/ define, seen from Python.

Constants, counter names and the cookie tables are read from the headers
themselves (one definition, in C); the map value structs are mirrored with
ctypes, and tests/unit/test_layout.py holds each mirror to the type bcc derives
from the C.
"""

import ctypes as ct
import os
import re
from functools import lru_cache
from pathlib import Path

PIN_ROOT = "/sys/fs/bpf/synguard"
FAMILYLESS = ("packets", "passed", "malformed")  # counted in the IPv4 slots only


@lru_cache(maxsize=None)
def bpf_dir():
    """The directory holding the C sources: synguard/bpf/ when installed
    (package data), bpf/ beside controller/ in a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "bpf", here.parent / "bpf"):
        if (candidate / "maps.h").is_file():
            return candidate
    raise RuntimeError("synguard's C sources (bpf/) are missing next to %s" % here)


def bpf_source(name):
    return (bpf_dir() / name).read_text()


@lru_cache(maxsize=None)
def _defines(name):
    """{macro: value} of the numeric `#define NAME VALUE` lines of header name."""
    found = re.findall(r"^#define (SG_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", bpf_source(name), re.M)
    return {k: int(v, 0) for k, v in found}


def constant(header, name):
    """The value of `#define name VALUE` in bpf/header."""
    try:
        return _defines(header)[name]
    except KeyError:
        raise RuntimeError("cannot read %s from %s" % (name, header)) from None


# Slots, switches, flags and port states, the timer's batch (maps.h).
COUNTER_SLOTS = constant("maps.h", "SG_COUNTER_SLOTS")  # per family: [0, 64) IPv4, then IPv6
PORT_PROTECTED = constant("maps.h", "SG_PORT_PROTECTED")
CF_WSCALE = constant("maps.h", "SG_CF_WSCALE")
CF_SACK = constant("maps.h", "SG_CF_SACK")
CF_TIMESTAMPS = constant("maps.h", "SG_CF_TIMESTAMPS")
CF_ECN = constant("maps.h", "SG_CF_ECN")
CF_CONNTRACK = constant("maps.h", "SG_CF_CONNTRACK")
CF_MONITOR = constant("maps.h", "SG_CF_MONITOR")
CF_DRAIN = constant("maps.h", "SG_CF_DRAIN")
SCF_WINSCALE = constant("maps.h", "SG_SCF_WINSCALE")
SCF_TIMESTAMP = constant("maps.h", "SG_SCF_TIMESTAMP")
SCF_UNREACH = constant("maps.h", "SG_SCF_UNREACH")
SCF_ECN = constant("maps.h", "SG_SCF_ECN")
SCF_SACK = constant("maps.h", "SG_SCF_SACK")
SYNCACHE_BUCKETS = constant("maps.h", "SG_SYNCACHE_BUCKETS")
TIMER_BATCH = constant("maps.h", "SG_TIMER_BATCH")
SYNACK_MAX = constant("maps.h", "SG_SYNACK_MAX")
LIMITED_SAMPLES = constant("maps.h", "SG_LIMITED_SAMPLES")


@lru_cache(maxsize=None)
def counter_help():
    """{name: help text} in slot order, from the SG_COUNTERS X-macro in
    maps.h: one `X(name) /* help */` per line."""
    text = bpf_source("maps.h")
    block = text.split("#define SG_COUNTERS(X)", 1)[1].split("\n\n", 1)[0]
    found = re.findall(r"\bX\((\w+)\)\s*/\*\s*(.*?)\s*\*/", block)
    if not found or len(found) > COUNTER_SLOTS:
        raise RuntimeError("cannot read SG_COUNTERS from maps.h")
    return dict(found)


def counter_names():
    return tuple(counter_help())


def xdp_outcomes():
    """The counters of which each XDP frame lands in exactly one (maps.h)."""
    names = counter_names()
    return names[names.index("passed") : names.index("coalesced") + 1]


def _table(name):
    text = bpf_source("cookie.h")
    m = re.search(r"#define %s \{([^}]*)\}" % name, text)
    if not m:
        raise RuntimeError("cannot read %s from cookie.h" % name)
    return tuple(int(x) for x in m.group(1).split(","))


@lru_cache(maxsize=None)
def mss_table(ipv6):
    return _table("SG_MSS6_TABLE" if ipv6 else "SG_MSS4_TABLE")


@lru_cache(maxsize=None)
def wscale_table():
    return _table("SG_WSCALE_TABLE")


class Key(ct.Structure):
    _fields_ = [("k0", ct.c_uint64), ("k1", ct.c_uint64)]


class Secrets(ct.Structure):
    """struct sg_secrets. Only the controller's rotation code touches keys."""

    _fields_ = [
        ("active", ct.c_uint32),
        ("fleet", ct.c_uint32),
        ("rotated_ns", ct.c_uint64),
        ("rotations", ct.c_uint64),
        ("keys", Key * 2),
        ("ahead", Key),
    ]

    def __repr__(self):  # never show key material, even by accident
        return "Secrets(active=%d, rotations=%d)" % (self.active, self.rotations)


class Config(ct.Structure):
    """struct sg_config."""

    _fields_ = [
        ("mss4", ct.c_uint16),
        ("mss6", ct.c_uint16),
        ("window", ct.c_uint16),
        ("wscale", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("ttl", ct.c_uint8),
        ("syncookies", ct.c_uint8),
        ("syncookies_only", ct.c_uint8),
        ("rexmtlimit", ct.c_uint8),
        ("cachelimit", ct.c_uint32),
        ("bucketlimit", ct.c_uint32),
        ("rexmt_ms", ct.c_uint32),
        ("pause_ms", ct.c_uint32),
        ("synack_rate", ct.c_uint32),
        ("synack_burst", ct.c_uint32),
        ("prefix4", ct.c_uint8),
        ("prefix6", ct.c_uint8),
        ("ext_opts", ct.c_uint8),
        ("ext_len8", ct.c_uint8),
        ("synack_interval_ns", ct.c_uint64),
        ("synack_tau_ns", ct.c_uint64),
        ("prefix_seed", ct.c_uint64),
        ("rst_rate", ct.c_uint32),
        ("verified_s", ct.c_uint32),
        ("rst_interval_ns", ct.c_uint64),
        ("rst_tau_ns", ct.c_uint64),
        ("verified_ns", ct.c_uint64),
    ]

    def derive(self, cpus=None):
        """The parameters the data path uses, from the settings: the reply
        budget's GCRA from rate and burst; each CPU's share of the RST rate
        (a per-CPU budget: no cache line that every CPU writes), a second's
        worth at once; the verified lifetime in ns."""
        self.synack_interval_ns = 10**9 // self.synack_rate if self.synack_rate else 0
        self.synack_tau_ns = (self.synack_burst - 1) * self.synack_interval_ns  # burst at once
        if self.rst_rate:
            per_cpu = max(1, self.rst_rate // (cpus or os.cpu_count() or 1))
            self.rst_interval_ns = 10**9 // per_cpu
            self.rst_tau_ns = (per_cpu - 1) * self.rst_interval_ns
        else:
            self.rst_interval_ns = self.rst_tau_ns = 0
        self.verified_ns = self.verified_s * 10**9
        return self


# The seed's defaults: TCP_SYNCACHE_HASHSIZE 512 x TCP_SYNCACHE_BUCKETLIMIT 30,
# SYNCACHE_MAXREXMTS 3; a 1 s first retransmission as Linux uses; FreeBSD's
# pause of one SYNCOOKIE_LIFETIME.
SYNCACHE_DEFAULTS = dict(
    syncookies=1,
    syncookies_only=0,
    cachelimit=512 * 30,
    bucketlimit=30,
    rexmtlimit=3,
    rexmt_ms=1000,
    pause_ms=16000,
)
# The reflection limit: 1000 replies a second, 1000 at once, per /24 or /64,
# beyond which only sources verified in the last hour are answered; RSTs for
# segments nobody knows: 10,000 a second in all (docs/DEPLOYING.md says why).
RATELIMIT_DEFAULTS = dict(
    synack_rate=1000, synack_burst=1000, prefix4=24, prefix6=64, rst_rate=10000, verified_s=3600
)
# Enforce mode: monitor mode (a switch in sg_config.flags) is asked for.
SETTING_DEFAULTS = {**SYNCACHE_DEFAULTS, **RATELIMIT_DEFAULTS, "monitor": 0}
SYNCACHE_MAX = 1 << 22  # largest syncache map synguard makes (cachelimit's ceiling)


def syncache_map_size(cachelimit):
    """The syncache map's size for a cachelimit: a power of two (the kernel
    rounds the bucket count up to one anyway), at least 65536."""
    return max(65536, 1 << (max(1, cachelimit) - 1).bit_length())


class Addr(ct.Structure):
    """struct sg_addr: a source address, IPv4 mapped (::ffff:a.b.c.d)."""

    _fields_ = [("w", ct.c_uint64 * 2)]

    def ip(self):
        """The address: IPv4Address or IPv6Address."""
        import ipaddress

        a = ipaddress.IPv6Address(bytes(self))
        return a.ipv4_mapped or a


class Limited(ct.Structure):
    """struct sg_limited: the latest sources the reflection limit dropped."""

    _fields_ = [("n", ct.c_uint64), ("src", Addr * LIMITED_SAMPLES)]


class Flow(ct.Structure):
    """struct sg_flow: a syncache key (seq half zeroed)."""

    _fields_ = [("w", ct.c_uint64 * 5), ("ipv6", ct.c_uint64)]

    def endpoints(self):
        """(client addr bytes, server addr bytes, client port, server port)."""
        raw = bytes(self)
        if self.ipv6:
            return raw[0:16], raw[16:32], int.from_bytes(raw[32:34], "big"), int.from_bytes(raw[34:36], "big")
        return raw[0:4], raw[4:8], int.from_bytes(raw[8:10], "big"), int.from_bytes(raw[10:12], "big")


class SyncacheEntry(ct.Structure):
    """struct sg_syncache_entry."""

    _fields_ = [
        ("added_ns", ct.c_uint64),
        ("rxt_ns", ct.c_uint64),
        ("irs", ct.c_uint32),
        ("iss", ct.c_uint32),
        ("ts", ct.c_uint32),
        ("ts_recent", ct.c_uint32),
        ("flowlabel", ct.c_uint32),
        ("peer_mss", ct.c_uint16),
        ("mss", ct.c_uint16),
        ("wnd", ct.c_uint16),
        ("bucket", ct.c_uint16),
        ("snd_wscale", ct.c_uint8),
        ("rcv_wscale", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("rxmits", ct.c_uint8),
        ("ttl", ct.c_uint8),
        ("l3_off", ct.c_uint8),
        ("frame_len", ct.c_uint8),
        ("pad", ct.c_uint8 * 4),
        ("frame", ct.c_uint8 * SYNACK_MAX),
    ]


class SyncacheState(ct.Structure):
    """struct sg_syncache_state."""

    _fields_ = [
        ("entries", ct.c_uint64),
        ("pause_until_ns", ct.c_uint64),
        ("pauses", ct.c_uint64),
        ("backoff", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class TimerRequest(ct.Structure):
    """struct sg_timer_req: the head of synguard_syncache_timer's frame."""

    _fields_ = [
        ("now_ns", ct.c_uint64),
        ("next_ns", ct.c_uint64),
        ("keys", ct.c_uint32),
        ("rexmt", ct.c_uint32),
        ("removed", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class Rexmt(ct.Structure):
    """struct sg_rexmt: one SYN-ACK the timer found due."""

    _fields_ = [
        ("ipv6", ct.c_uint8),
        ("len", ct.c_uint8),
        ("pad", ct.c_uint8 * 6),
        ("frame", ct.c_uint8 * SYNACK_MAX),
    ]


class TcpReqAttrs(ct.Structure):
    """struct sg_tcp_req_attrs: bpf_tcp_req_attrs (Linux >= 6.9), as XDP fills it."""

    _fields_ = [
        ("rcv_tsval", ct.c_uint32),
        ("rcv_tsecr", ct.c_uint32),
        ("mss", ct.c_uint16),
        ("rcv_wscale", ct.c_uint8),
        ("snd_wscale", ct.c_uint8),
        ("ecn_ok", ct.c_uint8),
        ("wscale_ok", ct.c_uint8),
        ("sack_ok", ct.c_uint8),
        ("tstamp_ok", ct.c_uint8),
        ("usec_ts_ok", ct.c_uint8),
        ("reserved", ct.c_uint8 * 3),
    ]


class Handoff(ct.Structure):
    """struct sg_handoff: what XDP leaves in the handoffs map for tc."""

    _fields_ = [
        ("at_ns", ct.c_uint64),
        ("isn", ct.c_uint32),
        ("pending", ct.c_uint32),
        ("attrs", TcpReqAttrs),
        ("iss", ct.c_uint32),
    ]


assert ct.sizeof(Secrets) == 72
assert ct.sizeof(Config) == 96
assert ct.sizeof(Flow) == 48
assert ct.sizeof(SyncacheEntry) == 160
assert ct.sizeof(SyncacheState) == 32
assert ct.sizeof(TimerRequest) == 32
assert ct.sizeof(Rexmt) == 112
assert ct.sizeof(TcpReqAttrs) == 20
assert ct.sizeof(Handoff) == 40
