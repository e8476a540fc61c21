"""The exporter on a running `synguard attach`, and a real Prometheus server
(Debian's, started by the test in the server namespace with the config from
deploy/prometheus) scraping it while real clients and a bounded flood run."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from synguard.lab import netns, testbed
from synguard.lab.support import status, wait_until
from synguard.lab.testbed import SERVER4, SERVER6, spoofed_syns

pytestmark = pytest.mark.netns
PORT = 8080
METRICS = "127.0.0.1:9717"
PROM = "127.0.0.1:19090"
DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "prometheus")


def http_get(bed, url):
    with netns.netns(bed.server_ns):  # the socket is made in the server namespace
        return urllib.request.urlopen(url, timeout=10).read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of the exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if p)
        out[(name, pairs)] = float(value)
    return out


def by_name(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def bed():
    args = ("--mode", "native", "--metrics-addr", METRICS, "--rotate-seconds", "600")
    with testbed.protected([PORT], *args) as (b, _, _):
        yield b


def test_promtool_check_metrics_is_clean(bed):
    for server in (SERVER4, SERVER6):
        assert bed.connect(server, PORT)["echo_ok"]
    body = http_get(bed, "http://%s/metrics" % METRICS)
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    samples = parse_metrics(body)
    assert any(n == "synguard_completed_total" and ("family", '"inet6"') in labels for n, labels in samples)
    assert not any("198.18" in str(labels) or "2001:db8" in str(labels) for _, labels in samples)


def test_the_controller_exports_build_info_and_its_process_and_only_on_metrics(bed):
    samples = parse_metrics(http_get(bed, "http://%s/metrics" % METRICS))
    ((labels, value),) = [(dict(lb), v) for (n, lb), v in samples.items() if n == "synguard_build_info"]
    assert value == 1 and labels["cookies"] == '"synguard"'
    assert labels["kernel"] == '"%s"' % os.uname().release
    rss = by_name(samples, "process_resident_memory_bytes")
    assert 10e6 < rss < 500e6, rss  # the controller's own, not a placeholder
    assert '<a href="/metrics">' in http_get(bed, "http://%s/" % METRICS)
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(bed, "http://%s/status" % METRICS)
    assert e.value.code == 404


def test_metrics_equal_status_at_the_same_moment(bed):
    for _ in range(5):
        assert bed.connect(SERVER4, PORT)["echo_ok"]

    # A scrape bracketed by two equal status reads saw the same counters
    # (stray IPv6 neighbour discovery may land between reads: read again).
    def bracketed():
        first = status(bed)
        samples = parse_metrics(http_get(bed, "http://%s/metrics" % METRICS))
        st = status(bed)
        still = (
            first["counters"] == st["counters"] and first["syncache"]["entries"] == st["syncache"]["entries"]
        )
        return still and (samples, st)

    got = wait_until(bracketed, 5, every=0.2)
    assert got, "the counters never stood still"
    samples, st = got
    for name, value in st["counters"].items():
        assert by_name(samples, "synguard_%s_total" % name) == value, name
    for family, counters in st["counters_by_family"].items():
        for name, value in counters.items():
            key = (
                "synguard_%s_total" % name,
                frozenset({("interface", '"%s"' % bed.server_if), ("family", '"%s"' % family)}),
            )
            assert samples[key] == value, (name, family)
    assert by_name(samples, "synguard_syncache_entries") == st["syncache"]["entries"]
    assert by_name(samples, "synguard_key_rotations_total") == st["key_rotations"]
    assert by_name(samples, "synguard_syncache_limit") == st["settings"]["cachelimit"]


@pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian's prometheus package is not installed")
def test_a_real_prometheus_scrapes_counters_and_rates(bed, tmp_path):
    conf = open(os.path.join(DEPLOY, "prometheus.yml")).read()
    conf = conf.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "evaluation_interval: 15s", "evaluation_interval: 1s"
    )
    assert 'targets: ["%s"]' % METRICS in conf
    (tmp_path / "prometheus.yml").write_text(conf)
    shutil.copy(os.path.join(DEPLOY, "synguard-rules.yml"), tmp_path)
    prom = netns.popen(
        bed.server_ns,
        [
            "prometheus",
            "--config.file=%s" % (tmp_path / "prometheus.yml"),
            "--web.listen-address=%s" % PROM,
            "--storage.tsdb.path=%s" % (tmp_path / "data"),
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def query(expr, at=None):
        params = {"query": expr}
        if at:
            params["time"] = "%.3f" % at
        data = json.loads(http_get(bed, "http://%s/api/v1/query?%s" % (PROM, urllib.parse.urlencode(params))))
        assert data["status"] == "success", data
        return data["data"]["result"]

    try:

        def scraped():
            try:
                return query('up{job="synguard"} == 1')
            except OSError:  # not listening yet
                return False

        assert wait_until(scraped, 30, every=0.5), prom.stderr.read1().decode()

        # A steady spoofed-SYN flood of 1000/s for 8 s, real clients meanwhile.
        frames = list(spoofed_syns(8000, PORT, seed=21))
        t0 = time.time()
        sent = [0]

        def paced():
            for i in range(0, len(frames), 100):
                sent[0] += bed.flood(frames[i : i + 100], seconds=1)
                time.sleep(max(0.0, t0 + (i + 100) / 1000 - time.time()))  # 1000/s: the rate tested

        flood = threading.Thread(target=paced)
        flood.start()
        clients = 0
        while flood.is_alive():
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            clients += 1
            time.sleep(0.2)  # a client's pace, not a wait
        flood.join()
        t1 = time.time()

        st = status(bed)

        def latest(counter):
            return float(query('sum(synguard_%s_total{job="synguard"})' % counter)[0]["value"][1])

        # Prometheus scrapes every second: wait for one after the flood.
        assert wait_until(lambda: latest("sendcookie") == st["counters"]["sendcookie"], 10)
        assert latest("completed") == st["counters"]["completed"]
        # rate() in the middle of the flood: what the sender kept to (~1000/s)
        mid = (t0 + t1) / 2
        rate = float(query("sum(rate(synguard_sendcookie_total[4s]))", at=mid)[0]["value"][1])
        assert 700 < rate < 1300, rate
        assert sent[0] == 8000 and clients > 10
        assert query('synguard_attach_info{mode="native"}')
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(30)
