"""`synguard attach`'s options: the flags, then --config FILE, then the
defaults, checked and turned into one AttachOptions. Every bad value is a
UsageError with one line that names it."""

import os
from dataclasses import dataclass, field

from . import configfile, datapath, firewall, fleet, layout
from .formats import metrics_address, parse_ports
from .settings import SETTINGS, check, parse_assignments


class UsageError(Exception):
    pass


MODES = ("auto", "native", "generic")
DEFAULT_METRICS = "127.0.0.1:9717"
DEFAULT_ROTATE_SECONDS = 16.0


@dataclass
class AttachOptions:
    """What `synguard attach` is asked to do: attach(), the daemon and a
    reload take it as it is."""

    iface: str
    ports: list
    mode: str = "auto"  # MODES
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS
    metrics_addr: str = ""  # "" for none
    force: bool = False
    settings: dict = field(default_factory=dict)  # sg_config field: value
    fleet_key: str = ""  # "" for per-host keys
    conntrack: str = "auto"  # firewall.OPTIONS
    cookies: str = "auto"  # datapath.COOKIE_MODES; attach resolves auto
    config: str = ""  # --config FILE, absolute ("" for none): reload reads it, `set --save` writes it
    flag_settings: tuple = ()  # the settings given as flags, which win over the file
    takeover: bool = False  # a running controller hands over (attach.Claim)
    watch_config: bool = False  # reload when the config file changes (a ConfigMap)

    def check_mode(self, cookies):
        """UsageError for what the resolved cookie mode cannot do. The
        kernel's cookies come from its own per-boot secret, so there is no
        key to share or rotate, and a cookie is all it keeps of a
        connection."""
        if cookies != "kernel":
            return
        if self.fleet_key:
            raise UsageError(
                "--fleet-key needs synguard's cookies (Linux >= 6.9): with the kernel's cookies each "
                "host's secret is its kernel's own"
            )
        if self.rotate_seconds != DEFAULT_ROTATE_SECONDS:
            raise UsageError(
                "--rotate-seconds needs synguard's cookies (Linux >= 6.9): the kernel's cookie secret "
                "does not rotate (its cookies live 1-2 minutes)"
            )
        try:
            check({**layout.SETTING_DEFAULTS, **self.settings}, cookies)
        except ValueError as e:
            raise UsageError(str(e)) from None


def attach_options(args):
    """AttachOptions from parsed attach arguments (and their --config).
    A bad value from the config file is named with the file."""
    try:
        conf = configfile.load(args.config) if args.config else {}
    except ValueError as e:
        raise UsageError(str(e)) from None

    def pick(name, default):
        """(value, how an error names it)"""
        value = getattr(args, name)
        if value is not None:
            return value, "--" + name.replace("_", "-")
        if name in conf:
            return conf[name], "%s: %s" % (args.config, name)
        return default, name

    ports_text, origin = pick("ports", None)
    if ports_text is None:
        raise UsageError("the following arguments are required: --ports (or ports in --config)")
    try:
        ports = parse_ports(ports_text)
    except ValueError as e:
        raise UsageError(str(e) if origin == "--ports" else "%s: %s" % (args.config, e)) from None
    mode, origin = pick("mode", "auto")
    if mode not in MODES:
        raise UsageError("%s must be auto, native or generic, not %r" % (_named(origin), mode))
    rotate_seconds, origin = pick("rotate_seconds", DEFAULT_ROTATE_SECONDS)
    rotate_seconds = float(rotate_seconds)
    if not 1 <= rotate_seconds <= 3600:
        raise UsageError("%s must be within 1..3600" % origin)
    if args.no_metrics or (args.metrics_addr is None and conf.get("metrics") is False):
        metrics_addr = ""
    else:
        text, origin = pick("metrics_addr", DEFAULT_METRICS)
        try:
            metrics_addr = metrics_address(text)
        except ValueError as e:
            raise UsageError("%s: %s" % (origin, e)) from None
    settings = dict(conf.get("settings", {}))
    for name in SETTINGS:
        if getattr(args, "set_" + name) is not None:
            settings[name] = getattr(args, "set_" + name)
    try:
        parsed = parse_assignments(settings.items())
        check({**layout.SETTING_DEFAULTS, **parsed})
    except ValueError as e:
        raise UsageError(str(e)) from None
    conntrack, origin = pick("conntrack", "auto")
    if conntrack not in firewall.OPTIONS:
        raise UsageError("%s must be %s, not %r" % (_named(origin), ", ".join(firewall.OPTIONS), conntrack))
    cookies, origin = pick("cookies", "auto")
    if cookies not in datapath.COOKIE_MODES:
        raise UsageError(
            "%s must be %s, not %r" % (_named(origin), ", ".join(datapath.COOKIE_MODES), cookies)
        )
    fleet_key = pick("fleet_key", "")[0] or ""
    if fleet_key:
        try:
            fleet.load(fleet_key)
        except fleet.FleetKeyError as e:
            raise UsageError(str(e)) from None
    return AttachOptions(
        iface=args.iface,
        ports=ports,
        mode=mode,
        rotate_seconds=rotate_seconds,
        metrics_addr=metrics_addr,
        force=bool(args.force or conf.get("force", False)),
        settings=parsed,
        fleet_key=fleet_key,
        conntrack=conntrack,
        cookies=cookies,
        config=os.path.abspath(args.config) if args.config else "",
        flag_settings=tuple(name for name in SETTINGS if getattr(args, "set_" + name) is not None),
        takeover=bool(args.takeover),
        watch_config=bool(args.watch_config),
    )


def _named(origin):
    # "mode must be ..." as before for a flag; "FILE: mode must be ..." from a file
    return origin[2:] if origin.startswith("--") else origin
