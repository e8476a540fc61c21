"""Prometheus exporter: the BPF counters and the syncache, read at scrape time.

A custom collector reads the pinned maps when Prometheus scrapes, so there is
no polling thread and nothing to drift: a scrape shows what `synguard status`
shows at that moment. Names follow the Prometheus conventions: synguard_
prefix, counters end in _total, seconds as the unit of time, an `interface`
label and a `family` label (inet, inet6) on the counters that have one.
Nothing is labelled per client address.
"""

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from . import layout
from .options import format_ports
from .status import snapshot


def _help(text):
    return text[0].upper() + text[1:] + "."


class SynguardCollector:
    """Reads the maps at each scrape through status.snapshot, the same
    function `synguard status` uses. Until attach has a data path (the
    endpoint is bound before attach, so that a taken port fails first) it
    exports nothing."""

    def __init__(self):
        self.attached = None

    def collect(self):
        if self.attached is None:
            return
        snap = snapshot(self.attached.maps, self.attached.state)
        ifname = snap["interface"]
        plain, families = snap["counters_familyless"], snap["counters_by_family"]
        for name, help_text in layout.counter_help().items():
            if name in plain:
                m = CounterMetricFamily("synguard_" + name, _help(help_text), labels=["interface"])
                m.add_metric([ifname], plain[name])
            else:
                m = CounterMetricFamily("synguard_" + name, _help(help_text), labels=["interface", "family"])
                for family, values in families.items():
                    m.add_metric([ifname, family], values[name])
            yield m

        sc = snap["syncache"]
        for name, kind, help_text, value in (
            (
                "synguard_syncache_entries",
                GaugeMetricFamily,
                "Half-open connections in the syncache.",
                sc["entries"],
            ),
            (
                "synguard_syncache_limit",
                GaugeMetricFamily,
                "The syncache's cachelimit.",
                snap["syncache_limit"],
            ),
            (
                "synguard_syncache_paused",
                GaugeMetricFamily,
                "1 while the syncache is paused after an overflow (cookies only).",
                int(sc["paused"]),
            ),
            (
                "synguard_syncache_pause_remaining_seconds",
                GaugeMetricFamily,
                "Seconds until the syncache's pause ends.",
                sc["pause_remaining_seconds"],
            ),
            ("synguard_syncache_pauses", CounterMetricFamily, "Syncache pauses since attach.", sc["pauses"]),
            (
                "synguard_key_age_seconds",
                GaugeMetricFamily,
                "Seconds since the cookie key was last rotated.",
                snap["key_age_seconds"],
            ),
            (
                "synguard_key_rotation_period_seconds",
                GaugeMetricFamily,
                "How often the cookie key is rotated.",
                snap["rotate_seconds"],
            ),
            (
                "synguard_key_rotations",
                CounterMetricFamily,
                "Cookie key rotations since attach.",
                snap["key_rotations"],
            ),
        ):
            m = kind(name, help_text, labels=["interface"])
            m.add_metric([ifname], value)
            yield m
        info = InfoMetricFamily("synguard_attach", "How synguard is attached.", labels=["interface"])
        info.add_metric([ifname], {"mode": snap["mode"], "ports": format_ports(snap["ports"])})
        yield info


def parse_addr(text):
    """'HOST:PORT' or '[V6]:PORT' -> (host, port). ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, got %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def serve(addr):
    """Bind /metrics on addr and serve it from a daemon thread: (server or
    None, collector); the caller sets collector.attached once it has a data
    path. OSError if the address is taken or not ours."""
    host, port = parse_addr(addr)
    registry = CollectorRegistry()
    collector = SynguardCollector()
    registry.register(collector)
    started = start_http_server(port, addr=host, registry=registry)
    # prometheus-client 0.16 (Debian 12's) returns nothing: its server then
    # lives as long as the process.
    return (started[0] if started else None), collector
