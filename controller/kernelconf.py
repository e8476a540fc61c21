"""struct sg_config: what the data path offers in its SYN-ACKs, taken from
the interface and the network namespace's sysctls so that the connection
handed to the kernel is the one the kernel itself would have made, plus the
settings (the seed's sysctls and the reflection limit)."""

import os

from . import layout
from .host import read_sysctl
from .settings import SETTINGS


def kernel_wscale():
    """The window scale Linux itself would offer: the smallest shift that
    covers the largest receive buffer (tcp_select_initial_window)."""
    rmem = read_sysctl("net.ipv4.tcp_rmem", ["4096", "131072", "6291456"])
    core = read_sysctl("net.core.rmem_max", ["212992"])
    space = max(int(rmem[2]), int(core[0]))
    return max(0, min(14, space.bit_length() - 1 - 15))


def option_flags():
    """SG_CF_* for the options this namespace's TCP accepts."""
    flags = 0
    for sysctl, bit in (
        ("net.ipv4.tcp_window_scaling", layout.CF_WSCALE),
        ("net.ipv4.tcp_sack", layout.CF_SACK),
        ("net.ipv4.tcp_timestamps", layout.CF_TIMESTAMPS),
        ("net.ipv4.tcp_ecn", layout.CF_ECN),  # 0 refuses ECN; 1 and 2 accept it when asked
    ):
        if read_sysctl(sysctl, ["0"])[0] != "0":
            flags |= bit
    return flags


def ext_limits():
    """(ext_opts, ext_len8) of sg_config: what Linux takes in a hop-by-hop
    or destination options header (ip6_parse_tlv), the stricter of the two
    (one pair serves both kinds), within a byte each (the data path looks
    at fewer options and shorter headers anyway). A negative number
    refuses unknown options: 0 here."""
    number = min(int(read_sysctl("net.ipv6.max_%s_opts_number" % k, ["8"])[0]) for k in ("hbh", "dst"))
    length = min(
        int(read_sysctl(name, ["2147483647"])[0])
        for name in ("net.ipv6.max_hbh_length", "net.ipv6.max_dst_opts_length")
    )
    return max(0, min(number, 255)), max(0, min(length // 8, 255))


def derive(mtu, settings, prefix_seed=None):
    """The sg_config for an interface of this MTU: settings (sg_config field:
    value) over the defaults; prefix_seed random unless given (an adopted
    data path keeps its own, so the rate limiter's buckets stay valid)."""
    fields = {**layout.SETTING_DEFAULTS, **settings}
    switches = [s.flag for s in SETTINGS.values() if s.flag and fields.pop(s.field)]
    cfg = layout.Config(**fields)
    cfg.prefix_seed = prefix_seed or int.from_bytes(os.urandom(8), "little")
    cfg.mss4 = max(layout.mss_table(False)[0], min(mtu - 40, 65535))
    cfg.mss6 = max(layout.mss_table(True)[0], min(mtu - 60, 65535))
    cfg.window = 65535  # the seed's TCP_MAXWIN; SYN windows are never scaled
    cfg.wscale = kernel_wscale()
    cfg.ttl = int(read_sysctl("net.ipv4.ip_default_ttl", ["64"])[0])
    cfg.flags = option_flags() | sum(switches)
    cfg.ext_opts, cfg.ext_len8 = ext_limits()
    return cfg.derive()
