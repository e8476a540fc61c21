"""`synguard attach`: the controller, in the foreground."""

from .. import layout
from ..formats import num
from ..options import DEFAULT_METRICS, attach_options
from ..settings import SETTINGS
from .common import Command, iface_argument

SETTINGS_HELP = (
    "settings (the seed's sysctls, the limits, monitor mode; attach --NAME VALUE, or set "
    "NAME=VALUE at run time):\n" + "".join("  %-16s %s\n" % (name, s.help) for name, s in SETTINGS.items())
)


def arguments(a):
    iface_argument(a)
    a.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of these options (flags win; deploy/synguard.example.toml)",
    )
    a.add_argument(
        "--ports",
        metavar="PORTS",
        help="ports to protect: 80,443,8000-8010 (required here or in --config)",
    )
    a.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        help="XDP mode: native (driver), generic (skb); default auto: native where the driver has it",
    )
    a.add_argument(
        "--rotate-seconds",
        type=float,
        metavar="SECONDS",
        help="cookie key rotation period, 1..3600 (default 16, the seed's SYNCOOKIE_LIFETIME)",
    )
    m = a.add_mutually_exclusive_group()
    m.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="Prometheus /metrics on HOST:PORT, [V6]:PORT, or :PORT for every address "
        "(default %s)" % DEFAULT_METRICS,
    )
    m.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    a.add_argument("--force", action="store_true", help="replace another XDP program on IFACE")
    a.add_argument(
        "--takeover",
        action="store_true",
        help="IFACE's running controller hands its data path over to this one, which swaps in its own "
        "(an upgrade) without a gap; a rolling update starts the new one first",
    )
    a.add_argument(
        "--watch-config",
        action="store_true",
        help="reload when the --config file changes (a Kubernetes ConfigMap), as on SIGHUP",
    )
    a.add_argument(
        "--conntrack",
        choices=("auto", "noscale", "off"),
        help="where the firewall would drop handed-off connections: auto (default) makes their "
        "conntrack entries and sets nf_conntrack_tcp_be_liberal=1 while attached; noscale makes them "
        "and offers no window scale instead; off refuses to attach",
    )
    a.add_argument(
        "--cookies",
        choices=("auto", "synguard", "kernel"),
        help="whose SYN cookies answer: synguard (ours, Linux >= 6.9), kernel (the kernel's own, "
        "Linux >= 5.3; no fleet mode, no key rotation); default auto: synguard where the kernel can",
    )
    a.add_argument(
        "--fleet-key",
        metavar="FILE",
        help="derive the keys from this fleet's master key (root only, 0600): hosts behind one "
        "address validate each other's cookies (default: a random key per host)",
    )
    for name, s in SETTINGS.items():
        if s.flag:  # a switch: --monitor; monitor = 0|1 in the file and in set
            a.add_argument("--" + name, dest="set_" + name, action="store_const", const="1", help=s.help[3:])
            continue
        default = s.show(layout.SETTING_DEFAULTS[s.field])
        a.add_argument(
            "--" + name.replace("_", "-"),
            dest="set_" + name,
            metavar="VALUE",
            help="%s (%s..%s, default %s)" % (s.help, num(s.lo), num(s.hi), num(default)),
        )


def run(args):
    from .. import daemon

    return daemon.run(attach_options(args), reread=(lambda: attach_options(args)) if args.config else None)


COMMANDS = [
    Command(
        "attach",
        "protect the TCP listeners on IFACE's ports until SIGINT/SIGTERM (foreground)",
        "IFACE --ports 80,443 [--mode auto|native|generic] [--rotate-seconds 16]\n"
        "    [--metrics-addr 127.0.0.1:9717 | --no-metrics] [--force] [--fleet-key FILE]\n"
        "    [--conntrack auto|noscale|off] [--cookies auto|synguard|kernel] [--monitor]\n"
        "    [--takeover] [--config FILE [--watch-config]] [--SETTING VALUE ...]",
        """  sudo synguard attach eth0 --ports 80,443
  sudo synguard attach eth0 --config /etc/synguard/eth0.toml
  sudo synguard attach eth0 --ports 443 --mode generic --metrics-addr :9717
  sudo synguard attach eth0 --ports 443 --fleet-key /etc/synguard/fleet.key
  sudo synguard attach eth0 --ports 443 --cachelimit 50000 --ratelimit 200
  sudo synguard attach eth0 --ports 443 --monitor            # count what it would do, pass everything
  sudo synguard attach eth0 --config eth0.toml --takeover    # replace a running one without a gap

signals: SIGHUP reloads --config; SIGTERM/SIGINT drain, then detach (under a
systemd restart: hand over to the next controller); SIGQUIT or a second
SIGTERM stops at once; SIGUSR1 rotates the key.""",
        arguments,
        run,
        epilog=SETTINGS_HELP,
    )
]
