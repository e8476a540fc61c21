"""The seed's sysctls, as synguard settings: names, ranges, parsing.

One table for `attach` (flags), `synguard set IFACE KEY=VALUE` (at run
time, written into the pinned config map), reload and `status`, and the
rules that settings must keep with each other and with the running data
path (check). A value outside its range is a ValueError with the reason;
nothing is written then.
"""

from dataclasses import dataclass

from . import layout
from .formats import num


@dataclass(frozen=True)
class Setting:
    name: str  # as in `synguard set` and the seed's sysctl
    field: str  # struct sg_config field
    lo: float
    hi: float
    scale: int  # the field holds value * scale (seconds -> ms)
    help: str
    seconds: bool = False
    flag: int = 0  # a switch in sg_config.flags, not a field of its own

    def raw(self, cfg):
        """The raw value in a layout.Config."""
        return int(bool(cfg.flags & self.flag)) if self.flag else getattr(cfg, self.field)

    def parse(self, text):
        try:
            value = float(text) if self.seconds else int(text)
        except ValueError:
            raise ValueError(
                "%s: %r is not a %s" % (self.name, text, "number" if self.seconds else "whole number")
            ) from None
        if not self.lo <= value <= self.hi:
            raise ValueError(
                "%s must be within %s..%s, not %s" % (self.name, num(self.lo), num(self.hi), text)
            )
        return round(value * self.scale)

    def show(self, raw):
        return raw / self.scale if self.seconds else raw


SETTINGS = {
    s.name: s
    for s in (
        Setting(
            "syncookies",
            "syncookies",
            0,
            1,
            1,
            "1: answer with cookies when there is no entry (default); 0: syncache only, "
            "SYNs beyond the limits are dropped",
        ),
        Setting(
            "syncookies_only", "syncookies_only", 0, 1, 1, "1: keep no syncache entries (with syncookies)"
        ),
        Setting("cachelimit", "cachelimit", 1, layout.SYNCACHE_MAX, 1, "entries in the whole syncache"),
        Setting(
            "bucketlimit",
            "bucketlimit",
            1,
            layout.SYNCACHE_MAX,
            1,
            "entries per bucket (%d buckets)" % layout.SYNCACHE_BUCKETS,
        ),
        Setting("rexmtlimit", "rexmtlimit", 0, 10, 1, "SYN-ACK retransmissions before an entry is stale"),
        Setting(
            "rexmtbase",
            "rexmt_ms",
            0.01,
            60,
            1000,
            "seconds to the first retransmission (then x2, x4, x8)",
            seconds=True,
        ),
        Setting(
            "pausetime",
            "pause_ms",
            0,
            3600,
            1000,
            "seconds of cookies-only after an overflow; doubles on repeats (0: never pause)",
            seconds=True,
        ),
        Setting(
            "ratelimit",
            "synack_rate",
            0,
            10_000_000,
            1,
            "replies (SYN-ACKs, retransmissions, RSTs) per second to one source prefix that has not "
            "completed a handshake lately (the reflection limit; 0: none)",
        ),
        Setting("ratelimit_burst", "synack_burst", 1, 10_000_000, 1, "replies to one source prefix at once"),
        Setting("prefix4", "prefix4", 0, 32, 1, "IPv4 source prefix length the limit counts by"),
        Setting("prefix6", "prefix6", 0, 128, 1, "IPv6 source prefix length the limit counts by"),
        Setting(
            "verifiedtime",
            "verified_s",
            0,
            86400,
            1,
            "seconds a source that completed a handshake stays exempt from its prefix's limit (0: never)",
        ),
        Setting(
            "rstlimit",
            "rst_rate",
            0,
            10_000_000,
            1,
            "RSTs per second, all sources together, for segments no socket, entry or cookie knows "
            "(0: drop them)",
        ),
        Setting(
            "monitor",
            "monitor",
            0,
            1,
            1,
            "1: judge and count every frame as enforce mode would, and pass it to the kernel untouched",
            flag=layout.CF_MONITOR,
        ),
    )
}


def parse_assignments(items):
    """['cachelimit=100', ...] or [(name, text), ...] -> {field: raw value};
    ValueError names the first bad one."""
    out = {}
    for item in items:
        name, sep, value = (item[0], "=", item[1]) if isinstance(item, tuple) else item.partition("=")
        if not sep:
            raise ValueError("expected KEY=VALUE, got %r" % item)
        if name not in SETTINGS:
            raise ValueError("unknown setting %r (known: %s)" % (name, ", ".join(SETTINGS)))
        s = SETTINGS[name]
        out[s.field] = s.parse(value)
    return out


def check(fields, cookies="synguard", syncache_size=None, ifname="IFACE"):
    """ValueError if the settings (sg_config field: raw value, all of them)
    contradict each other, the cookie mode, or a syncache map of
    syncache_size entries (a running data path's)."""
    if fields.get("syncookies_only") and not fields.get("syncookies"):
        raise ValueError(
            "syncookies_only=1 needs syncookies=1 (with syncookies=0 there would be neither "
            "cookies nor syncache entries)"
        )
    if cookies == "kernel" and not fields.get("syncookies", 1):
        raise ValueError(
            "syncookies=0 needs synguard's cookies (Linux >= 6.9): with the kernel's cookies only "
            "a cookie makes the kernel's socket"
        )
    if syncache_size is not None and fields.get("cachelimit", 0) > syncache_size:
        raise ValueError(
            "cachelimit can grow to %d while the data path stays attached (the syncache map's size, "
            "set at attach): synguard detach %s first for more" % (syncache_size, ifname)
        )


def show(values):
    """{name: value} -> 'name=value ...' (status, set)."""
    return " ".join("%s=%s" % (name, num(v)) for name, v in values.items())


def current(cfg):
    """{name: value} of a layout.Config, in the settings' own units."""
    return {name: s.show(s.raw(cfg)) for name, s in SETTINGS.items()}


def raw_fields(cfg):
    """{field: raw value} of every setting in a layout.Config."""
    return {s.field: s.raw(cfg) for s in SETTINGS.values()}
