"""deploy/: what an operator installs, scrapes, alerts on and looks at."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from synguard import configfile, metrics
from synguard.attach import Attached
from synguard.metrics import SynguardCollector
from synguard.runstate import RunState

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(ROOT, "deploy")
RULES = os.path.join(DEPLOY, "prometheus", "synguard-rules.yml")
UNIT = os.path.join(DEPLOY, "systemd", "synguard@.service")
K8S = os.path.join(DEPLOY, "kubernetes", "synguard.yaml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "synguard-dashboard.json")


def run(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def test_promtool_checks_the_rules_and_the_config():
    r = run("promtool", "check", "rules", RULES)
    assert r.returncode == 0 and "SUCCESS: 7 rules found" in r.stdout, r.stdout + r.stderr
    r = run("promtool", "check", "config", os.path.join(DEPLOY, "prometheus", "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_unit_tests():
    r = run(
        "promtool",
        "test",
        "rules",
        "synguard-rules.test.yml",
        cwd=os.path.join(os.path.dirname(__file__), "prometheus"),
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd here")
def test_systemd_unit_verifies(tmp_path):
    # verify wants ExecStart to exist: point it at this venv's synguard.
    exe = os.path.join(os.path.dirname(sys.executable), "synguard")
    text = open(UNIT).read().replace("/usr/local/bin/synguard", exe)
    unit = tmp_path / "synguard@test0.service"
    unit.write_text(text)
    r = run("systemd-analyze", "verify", "--man=no", str(unit))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # ... and it would say so: a value systemd ignores is reported.
    unit.write_text(text.replace("RestartPreventExitStatus=2", "RestartPreventExitStatus=two"))
    r = run("systemd-analyze", "verify", "--man=no", str(unit))
    assert "Failed to parse value" in r.stderr, r.stdout + r.stderr


def unit_capabilities():
    line = next(ln for ln in open(UNIT) if ln.startswith("CapabilityBoundingSet="))
    return sorted(line.split("=", 1)[1].split())


def unit_directives(path=UNIT):
    """{section: {key: [value, ...]}} of a unit file, as systemd reads it
    (keys may repeat; comments and blank lines skipped)."""
    sections, current = {}, None
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_runs_attach_with_the_config_and_the_least_capabilities():
    svc = unit_directives()["Service"]
    assert svc["ExecStart"] == ["/usr/local/bin/synguard attach %I --config /etc/synguard/%I.toml"]
    assert svc["Restart"] == ["on-failure"]
    assert "ExecStopPost" not in svc  # a restart after a crash adopts the data path
    assert unit_capabilities() == ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"]
    assert svc["LimitMEMLOCK"] == ["infinity"]  # Linux < 5.11 charges BPF maps to it


def test_memlock_soft_limit_goes_up_to_the_hard_one():
    """Linux < 5.11 charges BPF maps to RLIMIT_MEMLOCK: the data path's
    build lifts it where it may, else raises its soft limit to the hard one
    (no privilege needed). Here: without CAP_SYS_RESOURCE, as in the unit."""
    code = """if 1:
        import resource
        from synguard import host
        _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, hard))
        host.raise_memlock()
        print(resource.getrlimit(resource.RLIMIT_MEMLOCK) == (hard, hard), hard > 65536)
    """
    r = run("capsh", "--drop=cap_sys_resource", "--", "-c", 'exec "$0" -c "$1"', sys.executable, code)
    assert r.returncode == 0 and r.stdout == "True True\n", r.stderr


def test_unit_fails_without_config_never_restarts_on_bad_input_and_waits_for_the_device():
    d = unit_directives()
    unit, svc = d["Unit"], d["Service"]
    # A missing config fails the start (Assert), instead of skipping it (Condition).
    assert unit["AssertPathExists"] == ["/etc/synguard/%I.toml"]
    assert not any(k.startswith("Condition") for k in unit)
    assert svc["ExecStart"][0].endswith("--config " + unit["AssertPathExists"][0])
    # Exit code 2 (bad input, refused attach) is not restarted.
    assert svc["RestartPreventExitStatus"] == ["2"]
    # Bound to the interface's device: started when it appears, stopped when it goes.
    device = "sys-subsystem-net-devices-%i.device"
    assert unit["BindsTo"] == [device]
    assert device in " ".join(unit["After"]).split()
    assert " ".join(d["Install"]["WantedBy"]).split() == ["multi-user.target", device]


def test_bad_input_exits_with_the_code_the_unit_does_not_restart(tmp_path):
    conf = tmp_path / "eth9.toml"
    conf.write_text('ports = [80]\nmode = "fast"\n')
    r = run(sys.executable, "-m", "synguard.cli", "attach", "eth9", "--config", str(conf))
    assert [str(r.returncode)] == unit_directives()["Service"]["RestartPreventExitStatus"]
    assert r.stderr == "synguard: error: %s: mode must be auto, native or generic, not 'fast'\n" % conf


def test_unit_reloads_and_stops_as_the_controller_expects():
    """ExecReload sends SIGHUP (reload); the unit names itself, so that a
    SIGTERM during `systemctl restart` hands over; the stop timeout covers
    the longest drain."""
    from synguard import daemon, running

    service = unit_directives()["Service"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Environment"] == ["SYNGUARD_UNIT=%n"]
    (timeout,) = service["TimeoutStopSec"]
    assert int(timeout.removesuffix("s")) > running.DRAIN_WAIT_SECONDS > daemon.DRAIN_MAX_SECONDS


def test_docs_describe_the_unit_as_it_is():
    """The unit has no ExecStopPost (a restart adopts): the docs must not say otherwise."""
    assert "ExecStopPost" not in unit_directives()["Service"]
    for doc in ("README.md", os.path.join("docs", "DEPLOYING.md")):
        text = " ".join(open(os.path.join(ROOT, doc)).read().split())
        assert "runs `synguard detach` after stopping" not in text, doc
    deploying = " ".join(open(os.path.join(ROOT, "docs", "DEPLOYING.md")).read().split())
    for directive in ("AssertPathExists=", "RestartPreventExitStatus=2", "BindsTo=", "no ExecStopPost"):
        assert directive in deploying, directive


def test_daemonset():
    docs = {d["kind"]: d for d in yaml.safe_load_all(open(K8S))}
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    (c,) = spec["containers"]
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and sorted("CAP_" + x for x in caps["add"]) == unit_capabilities()
    assert not c["securityContext"]["privileged"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["bpffs"] == "/sys/fs/bpf" and volumes["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert c["args"][3:7] == ["--config", mounts["config"] + "/synguard.toml", "--watch-config", "--takeover"]
    # A rolling update: the new pod first, which takes over from the old one
    # (so no host port may be declared, or the surge pod never schedules),
    # and a grace period that covers a drain.
    assert spec["terminationGracePeriodSeconds"] >= 75
    roll = docs["DaemonSet"]["spec"]["updateStrategy"]["rollingUpdate"]
    assert (roll["maxSurge"], roll["maxUnavailable"]) == (1, 0) and "ports" not in c
    # metrics on the node's internal address, not on every address
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert c["args"][:3] == ["attach", "--metrics-addr", "$(NODE_IP):9717"]
    assert "metrics_addr" not in docs["ConfigMap"]["data"]["synguard.toml"]
    # ready only while protected
    assert c["readinessProbe"]["exec"]["command"][-1] == "status"
    # Memory: twice the measured steady cgroup usage (64 MiB) requested,
    # twice the peak while attach compiles (225 MiB) as the limit.
    mem = {k: v["memory"] for k, v in c["resources"].items()}
    mib = {k: int(v.removesuffix("Mi")) for k, v in mem.items() if v.endswith("Mi")}
    assert mib.keys() == {"requests", "limits"}, mem
    assert mib["requests"] >= 2 * 64 and mib["limits"] >= 2 * 225, mem
    fleet = volumes["fleet-key"]["secret"]
    assert fleet["optional"] is True and fleet["defaultMode"] == 0o400
    assert mounts["fleet-key"] == "/etc/synguard/fleet"
    assert 'fleet_key = "/etc/synguard/fleet/fleet.key"' in docs["ConfigMap"]["data"]["synguard.toml"]


def test_daemonset_config_is_a_valid_config_file(tmp_path):
    docs = {d["kind"]: d for d in yaml.safe_load_all(open(K8S))}
    conf = tmp_path / "synguard.toml"
    conf.write_text(docs["ConfigMap"]["data"]["synguard.toml"])
    loaded = configfile.load(str(conf))
    assert loaded["ports"] == "80,443" and "metrics_addr" not in loaded


def exported_names(maps):
    """Every series name the exporter produces, as Prometheus stores them."""
    state = RunState("test0", 1, 1, os.getpid(), "native", [80], 16.0)
    collector = SynguardCollector()
    collector.attached = Attached(None, maps, state, lock=None, keys=None)
    names = set()
    for family in collector.collect():
        for sample in family.samples:
            names.add(sample.name)
    return names


def queried_names(exprs):
    return {m for e in exprs for m in re.findall(r"\bsynguard_\w+", e)}


def test_dashboard_and_rules_query_only_exported_metrics(datapath):
    _prog, maps = datapath
    names = exported_names(maps)
    dash = json.load(open(DASHBOARD))
    dash_exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    dash_exprs += [v["query"] for v in dash["templating"]["list"]]
    rule_exprs = [r["expr"] for g in yaml.safe_load(open(RULES))["groups"] for r in g["rules"]]
    assert len(dash["panels"]) >= 6
    for expr_names in (queried_names(dash_exprs), queried_names(rule_exprs)):
        assert expr_names and expr_names <= names, expr_names - names


@pytest.mark.root
def test_install_script_is_safe_to_run_again():
    """make test ran it once already: a second run finds nothing missing."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    r = run("bash", os.path.join(DEPLOY, "install.sh"), "--venv", venv, "--dev", "--extra-apt", "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "apt-get install" not in r.stdout and r.stdout.strip().endswith("install: done")


@pytest.mark.root
def test_daemonset_entrypoint_picks_the_default_routes_interface():
    """attach and status without an interface get the node's: the default
    route's (IPv4, else IPv6), or SYNGUARD_IFACE."""
    from synguard.lab import netns

    entry = os.path.join(DEPLOY, "kubernetes", "entrypoint.sh")
    ns, peer = "sg-k8s-%d" % os.getpid(), "sg-k8s-p%d" % os.getpid()
    netns.create(ns)
    netns.create(peer)
    try:
        netns.veth(ns, "node0", peer, "peer0")
        netns.address(ns, "node0", "198.18.7.2/24")
        netns.address(ns, "node0", "2001:db8:7::2/64")

        def entrypoint(*args, **env):
            r = netns.run(
                ns,
                ["sh", entry, *args],
                capture_output=True,
                text=True,
                env={**os.environ, "SYNGUARD_BIN": "echo", **env},
            )
            return r.returncode, r.stdout.strip(), r.stderr.strip()

        assert entrypoint("status") == (
            2,
            "",
            "synguard: error: no default route on this node: set SYNGUARD_IFACE",
        )
        netns.route(ns, "default", "2001:db8:7::1")
        assert entrypoint("status")[1] == "status node0"
        netns.route(ns, "default", "198.18.7.1")
        assert entrypoint("attach", "--config", "x")[1] == "attach node0 --config x"
        assert entrypoint("status", SYNGUARD_IFACE="eth9")[1] == "status eth9"
        assert entrypoint("keygen", "f")[1] == "keygen f"
        # docker run IMAGE synguard ...: the name in front is dropped
        assert entrypoint("synguard", "keygen", "f")[1] == "keygen f"
        assert entrypoint("synguard", "status")[1] == "status node0"
    finally:
        netns.remove(ns)
        netns.remove(peer)


def get(url):
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_only_metrics_answers_with_metrics_the_index_links_to_it():
    with socket.socket() as s:  # a free port (serve refuses port 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _collector = metrics.serve("127.0.0.1:%d" % port)
    try:
        base = "http://127.0.0.1:%d" % port
        code, ctype, body = get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        lines = body.splitlines()
        build = [ln for ln in lines if ln.startswith("synguard_build_info{")]
        # cookies is the attached data path's mode: none yet
        assert build == [
            'synguard_build_info{cookies="",kernel="%s",version="%s"} 1.0'
            % (os.uname().release, metrics.version())
        ]
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
            assert any(ln.startswith(name + " ") for ln in lines), name
        # Not attached yet: nothing of the data path's.
        assert not any(ln.startswith("synguard_") and "build_info" not in ln for ln in lines)
        code, ctype, body = get(base + "/")
        assert code == 200 and ctype.startswith("text/html") and '<a href="/metrics">' in body
        for path in ("/metrics/", "/favicon.ico", "/index.html", "/metricsx", "/x/metrics"):
            code, _, body = get(base + path)
            assert code == 404 and "synguard_" not in body, path
    finally:
        server.shutdown()
        server.server_close()


def test_version_is_the_installed_one():
    from importlib import metadata

    from synguard.configfile import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        assert metrics.version() == metadata.version("synguard") == tomllib.load(f)["project"]["version"]


LOG_SOME = (
    "import logging; from synguard import journal; journal.setup(); log = logging.getLogger('synguard'); "
    "log.info('attached'); log.warning('port 80 has an MPTCP listener'); log.error('two\\nlines'); "
    "log.debug('not shown')"
)


def journal_run(code, journal_is_stderr, tmp_path):
    """Run python -c code with stderr on a file and JOURNAL_STREAM naming
    that file (as systemd does) or another one; (returncode, stderr)."""
    err, other = tmp_path / "stderr", tmp_path / "other"
    other.write_text("")
    with open(err, "w") as f:
        st = os.fstat(f.fileno()) if journal_is_stderr else os.stat(other)
        env = {**os.environ, "JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
        r = subprocess.run([sys.executable, "-c", code], stderr=f, env=env, timeout=60)
    return r.returncode, err.read_text()


def test_a_failed_command_under_systemd_is_one_line_at_priority_err(tmp_path):
    """Bad input: one line on stderr, <3> in front under systemd (so that
    journalctl -p err shows it), exit code 2 (RestartPreventExitStatus)."""
    conf = tmp_path / "eth9.toml"
    conf.write_text('ports = [80]\nmode = "fast"\n')
    code = "import sys; from synguard.cli import main; sys.exit(main(sys.argv[1:]))"
    code = code.replace("sys.argv[1:]", repr(["attach", "eth9", "--config", str(conf)]))
    line = "synguard: error: %s: mode must be auto, native or generic, not 'fast'\n" % conf
    assert journal_run(code, True, tmp_path) == (2, "<3>" + line)
    assert journal_run(code, False, tmp_path) == (2, line)


def test_log_lines_carry_journald_priorities_when_stderr_is_the_journal(tmp_path):
    assert journal_run(LOG_SOME, True, tmp_path) == (
        0,
        "<6>synguard: attached\n<4>synguard: port 80 has an MPTCP listener\n<3>synguard: two\n<3>lines\n",
    )
    # JOURNAL_STREAM inherited by a process whose stderr went elsewhere: no prefixes.
    assert journal_run(LOG_SOME, False, tmp_path) == (
        0,
        "synguard: attached\nsynguard: port 80 has an MPTCP listener\nsynguard: two\nlines\n",
    )


def dockerignore_excludes(patterns, path):
    """Whether Docker leaves path out of the build context: the last
    pattern that matches the path or one of its parent directories wins
    (moby/patternmatcher: * stays within a name, ** spans directories)."""

    def regex(p):
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for line in patterns:
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
        if any(regex(pattern).match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_the_image_context_holds_what_install_needs_and_no_more(tmp_path):
    """COPY . takes the repository's root (the Dockerfile's build context):
    .dockerignore keeps .git, venvs, build output and caches out, and what
    is left builds the package."""
    assert (
        "docker build -f deploy/kubernetes/Dockerfile -t synguard:0.1.0 ."
        in open(os.path.join(DEPLOY, "kubernetes", "Dockerfile")).read()
    )
    lines = open(os.path.join(ROOT, ".dockerignore")).read().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    for junk in (
        ".git/HEAD",
        ".venv/bin/python",
        "build/lib/synguard/cli/__init__.py",
        "synguard.egg-info/PKG-INFO",
        "controller/__pycache__/cli.cpython-311.pyc",
        "vagrant/.vagrant/machines/default/box.img",
        ".pytest_cache/v/cache/lastfailed",
        "tests/deploy/test_deploy.py",
    ):
        assert dockerignore_excludes(patterns, junk), junk
    tracked = run("git", "ls-files", cwd=ROOT).stdout.split()
    context = [f for f in tracked if not dockerignore_excludes(patterns, f)]
    needed = ("controller/", "bpf/", "deploy/", "pyproject.toml", "README.md")
    assert all(f.startswith(needed) for f in context)
    assert {f for f in tracked if f.startswith(needed)} == set(context)
    # What is left is enough for install.sh's pip install.
    src = tmp_path / "src"
    for f in context:
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy(os.path.join(ROOT, f), src / f)
    r = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", str(tmp_path / "wheel"), str(src),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = os.listdir(tmp_path / "wheel")
    listing = run(sys.executable, "-m", "zipfile", "-l", str(tmp_path / "wheel" / wheel)).stdout
    assert "synguard/cli/__init__.py" in listing and "synguard/bpf/" in listing


def test_the_readme_quotes_attach_as_it_speaks():
    from synguard.daemon import attached_line
    from synguard.options import AttachOptions

    opts = AttachOptions("eth0", [80, 443], metrics_addr="127.0.0.1:9717")
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "\n%s\n" % attached_line(opts, "native", "synguard") in readme
