"""Prometheus exporter: the BPF counters and the syncache, read at scrape time.

A custom collector reads the pinned maps when Prometheus scrapes, so there is
no polling thread and nothing to drift: a scrape shows what `synguard status`
shows at that moment. Names follow the Prometheus conventions: synguard_
prefix, counters end in _total, seconds as the unit of time, an `interface`
label and a `family` label (inet, inet6) on the counters that have one.
Nothing is labelled per client address.
"""

import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from . import layout


def _help(text):
    return text[0].upper() + text[1:] + "."


class SynguardCollector:
    def __init__(self, maps, state):
        self.maps = maps
        self.state = state

    def collect(self):
        ifname = self.state.ifname
        plain, families = self.maps.read_counters_by_family()
        for name, help_text in layout.counter_help().items():
            if name in plain:
                m = CounterMetricFamily("synguard_" + name, _help(help_text), labels=["interface"])
                m.add_metric([ifname], plain[name])
            else:
                m = CounterMetricFamily("synguard_" + name, _help(help_text), labels=["interface", "family"])
                for family, values in families.items():
                    m.add_metric([ifname, family], values[name])
            yield m

        now = time.monotonic_ns()
        st = self.maps.syncache_state.lookup(0)
        cfg = self.maps.config.lookup(0)
        secrets = self.maps.secrets.lookup(0)
        paused = st.pause_until_ns > now
        for name, kind, help_text, value in (
            (
                "synguard_syncache_entries",
                GaugeMetricFamily,
                "Half-open connections in the syncache.",
                st.entries,
            ),
            ("synguard_syncache_limit", GaugeMetricFamily, "The syncache's cachelimit.", cfg.cachelimit),
            (
                "synguard_syncache_paused",
                GaugeMetricFamily,
                "1 while the syncache is paused after an overflow (cookies only).",
                int(paused),
            ),
            (
                "synguard_syncache_pause_remaining_seconds",
                GaugeMetricFamily,
                "Seconds until the syncache's pause ends.",
                max(0.0, (st.pause_until_ns - now) / 1e9),
            ),
            ("synguard_syncache_pauses", CounterMetricFamily, "Syncache pauses since attach.", st.pauses),
            (
                "synguard_key_age_seconds",
                GaugeMetricFamily,
                "Seconds since the cookie key was last rotated.",
                (now - secrets.rotated_ns) / 1e9,
            ),
            (
                "synguard_key_rotation_period_seconds",
                GaugeMetricFamily,
                "How often the cookie key is rotated.",
                self.state.rotate_seconds,
            ),
            (
                "synguard_key_rotations",
                CounterMetricFamily,
                "Cookie key rotations since attach.",
                secrets.rotations,
            ),
        ):
            m = kind(name, help_text, labels=["interface"])
            m.add_metric([ifname], value)
            yield m
        info = InfoMetricFamily("synguard_attach", "How synguard is attached.", labels=["interface"])
        info.add_metric([ifname], {"mode": self.state.mode, "ports": ",".join(map(str, self.state.ports))})
        yield info


def parse_addr(text):
    """'HOST:PORT' or '[V6]:PORT' -> (host, port). ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, got %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def serve(addr, maps, state):
    """Serve /metrics on addr in a daemon thread; returns the HTTP server."""
    host, port = parse_addr(addr)
    registry = CollectorRegistry()
    registry.register(SynguardCollector(maps, state))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
