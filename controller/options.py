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


class _Sources:
    """An attach option from its flag, else the config file, else its
    default; with the way an error names where it came from."""

    def __init__(self, args, conf):
        self.args, self.conf = args, conf

    def pick(self, name, default):
        """(value, how an error names it)"""
        value = getattr(self.args, name)
        if value is not None:
            return value, "--" + name.replace("_", "-")
        if name in self.conf:
            return self.conf[name], "%s: %s" % (self.args.config, name)
        return default, name

    def choice(self, name, default, allowed):
        value, origin = self.pick(name, default)
        if value not in allowed:
            names = "%s or %s" % (", ".join(allowed[:-1]), allowed[-1])
            raise UsageError("%s must be %s, not %r" % (_named(origin), names, value))
        return value

    def ports(self):
        text, origin = self.pick("ports", None)
        if text is None:
            raise UsageError("the following arguments are required: --ports (or ports in --config)")
        try:
            return parse_ports(text)
        except ValueError as e:
            raise UsageError(str(e) if origin == "--ports" else "%s: %s" % (self.args.config, e)) from None

    def rotate_seconds(self):
        value, origin = self.pick("rotate_seconds", DEFAULT_ROTATE_SECONDS)
        if not 1 <= float(value) <= 3600:
            raise UsageError("%s must be within 1..3600" % origin)
        return float(value)

    def metrics_addr(self):
        args = self.args
        if args.no_metrics or (args.metrics_addr is None and self.conf.get("metrics") is False):
            return ""
        text, origin = self.pick("metrics_addr", DEFAULT_METRICS)
        try:
            return metrics_address(text)
        except ValueError as e:
            raise UsageError("%s: %s" % (origin, e)) from None

    def settings(self):
        """The file's settings (parsed as it was read), the flags' over them."""
        flags = [(name, getattr(self.args, "set_" + name)) for name in self.flag_settings()]
        try:
            settings = {**self.conf.get("settings", {}), **parse_assignments(flags)}
            check({**layout.SETTING_DEFAULTS, **settings})
        except ValueError as e:
            raise UsageError(str(e)) from None
        return settings

    def flag_settings(self):
        return tuple(name for name in SETTINGS if getattr(self.args, "set_" + name) is not None)

    def fleet_key(self):
        path = self.pick("fleet_key", "")[0] or ""
        if path:
            try:
                fleet.load(path)
            except fleet.FleetKeyError as e:
                raise UsageError(str(e)) from None
        return path


def attach_options(args):
    """AttachOptions from parsed attach arguments (and their --config).
    A bad value from the config file is named with the file."""
    try:
        conf = configfile.load(args.config) if args.config else {}
    except ValueError as e:
        raise UsageError(str(e)) from None
    src = _Sources(args, conf)
    return AttachOptions(
        iface=args.iface,
        ports=src.ports(),
        mode=src.choice("mode", "auto", MODES),
        rotate_seconds=src.rotate_seconds(),
        metrics_addr=src.metrics_addr(),
        force=bool(args.force or conf.get("force", False)),
        settings=src.settings(),
        fleet_key=src.fleet_key(),
        conntrack=src.choice("conntrack", "auto", firewall.OPTIONS),
        cookies=src.choice("cookies", "auto", datapath.COOKIE_MODES),
        config=os.path.abspath(args.config) if args.config else "",
        flag_settings=src.flag_settings(),
        takeover=bool(args.takeover),
        watch_config=bool(args.watch_config),
    )


def _named(origin):
    # "mode must be ..." as before for a flag; "FILE: mode must be ..." from a file
    return origin[2:] if origin.startswith("--") else origin
