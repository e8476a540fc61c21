"""`synguard attach`'s options: the flags, then --config FILE, then the
defaults, checked and turned into one AttachOptions. Every bad value is a
UsageError with one line that names it."""

from dataclasses import dataclass

from . import configfile, firewall, fleet
from .attach import Request
from .settings import SETTINGS, parse_assignments


class UsageError(Exception):
    pass


MODES = ("auto", "native", "generic")
DEFAULT_METRICS = "127.0.0.1:9717"


def parse_ports(text):
    """'80,443,8000-8010' -> sorted list; UsageError on anything else."""
    ports = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UsageError("invalid port %r" % part) from None
        if first > last:
            raise UsageError("port range %r is reversed (write %d-%d)" % (part, last, first))
        if not (1 <= first <= last <= 65535):
            raise UsageError("port %r is outside 1..65535" % part)
        ports.update(range(first, last + 1))
    return sorted(ports)


def format_ports(ports):
    """[80, 443, 8000, ..., 8010] -> '80,443,8000-8010' (parse_ports' inverse)."""
    runs = []
    for p in sorted(ports):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in runs)


@dataclass
class AttachOptions:
    iface: str
    ports: list
    mode: str
    rotate_seconds: float
    metrics_addr: str  # "" for none
    force: bool
    settings: dict  # sg_config field: value
    fleet_key: str  # "" for per-host keys
    conntrack: str  # firewall.OPTIONS

    def request(self):
        return Request(
            self.iface,
            self.ports,
            self.mode,
            self.force,
            self.rotate_seconds,
            self.metrics_addr,
            self.settings,
            self.conntrack,
        )


def attach_options(args):
    """AttachOptions from parsed attach arguments (and their --config)."""
    try:
        conf = configfile.load(args.config) if args.config else {}
    except ValueError as e:
        raise UsageError(str(e)) from None

    def pick(name, default):
        value = getattr(args, name)
        return value if value is not None else conf.get(name, default)

    ports_text = pick("ports", None)
    if ports_text is None:
        raise UsageError("the following arguments are required: --ports (or ports in --config)")
    mode = pick("mode", "auto")
    if mode not in MODES:
        raise UsageError("mode must be auto, native or generic, not %r" % mode)
    rotate_seconds = float(pick("rotate_seconds", 16.0))
    if not 1 <= rotate_seconds <= 3600:
        raise UsageError("--rotate-seconds must be within 1..3600")
    if args.no_metrics or (args.metrics_addr is None and conf.get("metrics") is False):
        metrics_addr = ""
    else:
        metrics_addr = pick("metrics_addr", DEFAULT_METRICS)
        from .metrics import parse_addr

        try:
            parse_addr(metrics_addr)
        except ValueError as e:
            raise UsageError("--metrics-addr: %s" % e) from None
    settings = dict(conf.get("settings", {}))
    for name in SETTINGS:
        if getattr(args, "set_" + name) is not None:
            settings[name] = getattr(args, "set_" + name)
    try:
        parsed = parse_assignments("%s=%s" % kv for kv in settings.items())
    except ValueError as e:
        raise UsageError(str(e)) from None
    conntrack = pick("conntrack", "auto")
    if conntrack not in firewall.OPTIONS:
        raise UsageError("conntrack must be %s, not %r" % (", ".join(firewall.OPTIONS), conntrack))
    fleet_key = pick("fleet_key", "") or ""
    if fleet_key:
        try:
            fleet.load(fleet_key)
        except fleet.FleetKeyError as e:
            raise UsageError(str(e)) from None
    return AttachOptions(
        args.iface,
        parse_ports(ports_text),
        mode,
        rotate_seconds,
        metrics_addr,
        bool(args.force or conf.get("force", False)),
        parsed,
        fleet_key,
        conntrack,
    )
