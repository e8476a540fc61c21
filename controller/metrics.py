"""Prometheus exporter: the BPF counters and the syncache, read at scrape time.

A custom collector reads the pinned maps when Prometheus scrapes, so there is
no polling thread and nothing to drift: a scrape shows what `synguard status`
shows at that moment. Names follow the Prometheus conventions: synguard_
prefix, counters end in _total, seconds as the unit of time, an `interface`
label and a `family` label (inet, inet6) on the counters that have one.
Nothing is labelled per client address. Beside them, from the moment the
endpoint is bound: synguard_build_info and the standard process_* series
(the controller's CPU, memory, file descriptors).

Only /metrics answers with metrics; / is a page that links to it, anything
else is 404 (prometheus_client alone answers every path with the metrics).
"""

import html
import os
import socket
import threading
from importlib import metadata
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from . import __version__, layout
from .formats import format_ports, parse_addr
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
            (
                "synguard_monitor",
                GaugeMetricFamily,
                "1 in monitor mode: frames are counted as enforce mode would judge them, and all passed.",
                int(snap["monitor"]),
            ),
            (
                "synguard_drain_remaining_seconds",
                GaugeMetricFamily,
                "While draining (a stop): seconds until the data path is taken off.",
                snap["drain_remaining_seconds"],
            ),
        ):
            if value is None:  # the kernel's cookies: no key of ours; not draining
                continue
            m = kind(name, help_text, labels=["interface"])
            m.add_metric([ifname], value)
            yield m
        info = InfoMetricFamily("synguard_attach", "How synguard is attached.", labels=["interface"])
        info.add_metric(
            [ifname],
            {
                "mode": snap["mode"],
                "cookies": snap["cookies"],
                "ports": format_ports(snap["ports"]),
                "enforce": "monitor" if snap["monitor"] else "enforce",
                "phase": snap["phase"],
            },
        )
        yield info


def version():
    """The installed distribution's version, else the package's own."""
    try:
        return metadata.version("synguard")
    except metadata.PackageNotFoundError:
        return __version__


class BuildInfoCollector:
    """synguard_build_info{version, cookies, kernel} 1. cookies says whose
    SYN cookies answer: "synguard" (ours, at XDP) or "kernel" (the kernel's
    own, minted at XDP); "" until attach has decided."""

    def __init__(self, attached):
        self.attached = attached  # the SynguardCollector, whose data path decides
        self.labels = {"version": version(), "kernel": os.uname().release}

    def collect(self):
        a = self.attached.attached
        info = InfoMetricFamily("synguard_build", "The controller's version, cookies and kernel.")
        info.add_metric([], {**self.labels, "cookies": a.state.cookies if a else ""})
        yield info


INDEX = (
    "<!DOCTYPE html>\n<html><head><title>synguard</title></head><body>\n"
    '<h1>synguard %s</h1>\n<p><a href="/metrics">/metrics</a></p>\n</body></html>\n'
)


def make_app(registry):
    """The WSGI app: /metrics (prometheus_client's, which also honours
    name[] and gzip), / a page linking to it, 404 for anything else."""
    metrics_app = make_wsgi_app(registry)
    index = (INDEX % html.escape(version())).encode()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [index]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"404 Not Found: metrics are at /metrics\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no line per scrape
        pass


def make_registry():
    """(registry, collector): our series, build_info and process_*."""
    registry = CollectorRegistry()
    collector = SynguardCollector()
    registry.register(collector)
    registry.register(BuildInfoCollector(collector))
    ProcessCollector(registry=registry)
    return registry, collector


def serve(addr):
    """Bind /metrics on addr and serve it from a daemon thread: (server or
    None, collector); the caller sets collector.attached once it has a data
    path. OSError if the address is taken or not ours."""
    host, port = parse_addr(addr)
    registry, collector = make_registry()
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
    server = make_server(host, port, make_app(registry), server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server, collector
