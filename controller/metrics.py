"""Prometheus exporter: the BPF counters, read at scrape time.

A custom collector reads the per-CPU counters map when Prometheus scrapes,
so there is no polling thread and nothing to drift. Names follow the
Prometheus conventions: synguard_ prefix, counters end in _total (added by
prometheus_client), an `interface` label, nothing per client address.
"""

import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from . import layout


class SynguardCollector:
    def __init__(self, maps, state):
        self.maps = maps
        self.state = state

    def collect(self):
        ifname = self.state.ifname
        counters = self.maps.read_counters()
        for name, help_text in layout.counter_help().items():
            m = CounterMetricFamily(
                "synguard_" + name, help_text[0].upper() + help_text[1:] + ".", labels=["interface"]
            )
            m.add_metric([ifname], counters[name])
            yield m
        secrets = self.maps.secrets.lookup(0)
        age = GaugeMetricFamily(
            "synguard_key_age_seconds", "Seconds since the cookie key was last rotated.", labels=["interface"]
        )
        age.add_metric([ifname], (time.monotonic_ns() - secrets.rotated_ns) / 1e9)
        yield age
        rot = CounterMetricFamily(
            "synguard_key_rotations", "Cookie key rotations since attach.", labels=["interface"]
        )
        rot.add_metric([ifname], secrets.rotations)
        yield rot
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
