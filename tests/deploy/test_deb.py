"""make deb's package: its contents, lintian, and a round trip through apt on
this machine (install, the command, the man page, the completion, make
demo's test bed on Debian's python3 and libraries, remove, purge).

The round trip leaves the machine as it found it, also when it fails: the
package is purged, and so are the dependencies the install pulled in. While
it is installed, a venv made with --system-site-packages (make setup's)
imports synguard from /usr/lib/python3/dist-packages: nothing else in this
suite runs meanwhile, and the test refuses to start where synguard is
already installed from a package.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from synguard.configfile import tomllib

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PYLIB = "/usr/lib/python3/dist-packages/synguard"
MAN = "/usr/share/man/man8/synguard.8.gz"
COMPLETION = "/usr/share/bash-completion/completions/synguard"
UNIT = "/lib/systemd/system/synguard@.service"
EXAMPLE = "/etc/synguard/synguard.example.toml"
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="not a Debian system"),
]


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def dpkg_state():
    """{package: status} of everything dpkg knows."""
    out = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"]).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def installed(state):
    return {p for p, s in state.items() if s.startswith("ii")}


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The package, built into a directory of its own (dist/ is left alone)."""
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "OUT": str(out), "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    r = run([str(ROOT / "packaging" / "build-deb.sh")], env=env)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path == out / ("synguard_%s-1_all.deb" % VERSION)
    return path


def test_contents(deb):
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
    entries = {}
    for line in listing:
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        entries[name[1:].rstrip("/") or "/"] = (mode, owner)
    assert {owner for _, owner in entries.values()} == {"root/root"}
    for path in ("/usr/bin/synguard", UNIT, EXAMPLE, MAN, COMPLETION):
        assert path in entries, path
    assert entries["/usr/bin/synguard"][0] == "-rwxr-xr-x"
    for path in ("/usr/share/doc/synguard/copyright", "/usr/share/doc/synguard/changelog.Debian.gz"):
        assert entries[path][0] == "-rw-r--r--", path
    # Every module and every C file of the tree, where pyproject.toml maps them.
    want = {
        PYLIB + "/" + p.relative_to(ROOT / "controller").as_posix() for p in ROOT.glob("controller/**/*.py")
    }
    want |= {PYLIB + "/bpf/" + p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    shipped = {n for n in entries if n.startswith(PYLIB + "/") and n.endswith((".py", ".c", ".h"))}
    assert shipped == want
    assert not [n for n in entries if "__pycache__" in n or n.endswith(".pyc")]

    info = run(["dpkg-deb", "-f", str(deb), "Version", "Architecture", "Depends"]).stdout
    assert "Version: %s-1\n" % VERSION in info and "Architecture: all\n" in info
    depends = [d.split()[0] for d in info.split("Depends:", 1)[1].split(",")]
    assert depends == [
        "python3",
        "python3:any",
        "python3-bpfcc",
        "python3-prometheus-client",
        "python3-pyroute2",
    ]
    unit = run(["sh", "-c", "dpkg-deb --fsys-tarfile %s | tar -xO .%s" % (deb, UNIT)]).stdout
    assert "ExecStart=/usr/bin/synguard attach %I --config /etc/synguard/%I.toml\n" in unit
    control = run(["dpkg-deb", "-e", str(deb), str(deb.parent / "DEBIAN")])
    assert control.returncode == 0
    assert (deb.parent / "DEBIAN" / "conffiles").read_text() == EXAMPLE + "\n"


def test_lintian(deb):
    if not shutil.which("lintian"):
        pytest.fail("no lintian: make setup installs it")
    r = run(["lintian", "--fail-on", "error", str(deb)])
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert r.returncode == 0 and not errors, r.stdout + r.stderr


def completions(line):
    """What the packaged completion offers for the words of line, the cursor
    at its end (bash-completion's helpers stubbed)."""
    words = line.split(" ")
    script = (
        '_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; '
        "cur=${words[cword]}; prev=${words[cword-1]}; }\n"
        "_filedir() { COMPREPLY=(FILES); }\ncompopt() { :; }\n"
        "source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_synguard\n"
        'printf "%%s\\n" "${COMPREPLY[@]}"\n'
    ) % (COMPLETION, " ".join("'%s'" % w for w in words), len(words) - 1)
    r = run(["bash", "--norc", "-c", script])
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def check_installed():
    assert run(["/usr/bin/synguard", "--version"]).stdout == "synguard %s\n" % VERSION
    r = run(["/usr/bin/synguard", "--help"])
    assert r.returncode == 0 and "attach" in r.stdout
    r = run(["/usr/bin/synguard", "attach", "lo", "--mode", "bogus"])
    assert r.returncode == 2 and r.stderr.startswith("synguard: error: ") and r.stderr.count("\n") == 1
    if shutil.which("man"):
        assert run(["man", "-w", "synguard"]).stdout.strip() == MAN
    assert Path(MAN).is_file() and stat.S_IMODE(os.stat(MAN).st_mode) == 0o644
    where = run(["/usr/bin/python3", "-I", "-c", "import synguard; print(synguard.__file__)"], cwd="/")
    assert where.stdout.strip() == PYLIB + "/__init__.py"
    compiled = {(p.parent.parent, p.name.split(".")[0]) for p in Path(PYLIB).rglob("__pycache__/*.pyc")}
    uncompiled = [str(p) for p in Path(PYLIB).rglob("*.py") if (p.parent, p.stem) not in compiled]
    assert not uncompiled, "postinst did not byte-compile %s" % uncompiled
    assert Path(EXAMPLE).is_file()

    assert completions("synguard at") == ["attach"]
    assert completions("synguard attach eth0 --mo") == ["--mode", "--monitor"]
    assert completions("synguard attach eth0 --mode ") == ["auto", "native", "generic"]
    assert "lo" in completions("synguard status l")
    assert completions("synguard set lo cachel") == ["cachelimit="]
    assert completions("synguard keygen ") == ["FILES"]

    # The real thing on Debian's python3, bcc, pyroute2 and prometheus-client
    # (not the venv's): make demo's test bed, XDP, tc, a flood, /metrics.
    demo = run(["/usr/bin/python3", "-I", "-m", "synguard.lab.demo"], cwd="/", timeout=90)
    assert demo.returncode == 0 and "verdict: PASS" in demo.stdout, demo.stdout + demo.stderr


def test_apt_round_trip(deb):
    before = dpkg_state()
    if "synguard" in before:
        pytest.skip("synguard is installed from a package here (%s): not touching it" % before["synguard"])
    if run(["apt-cache", "show", "python3-pyroute2"]).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=110)
    pulled_in = set()
    try:
        r = run([*APT, "install", "--no-install-recommends", str(deb)], env=APT_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        pulled_in = installed(dpkg_state()) - installed(before) - {"synguard"}
        check_installed()

        r = run([*APT, "remove", "synguard"], env=APT_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        assert dpkg_state().get("synguard", "").startswith("rc")  # removed, its conffile kept
        for path in ("/usr/bin/synguard", PYLIB, UNIT, MAN, COMPLETION, "/usr/share/doc/synguard"):
            assert not os.path.lexists(path), path
        assert Path(EXAMPLE).is_file()

        r = run([*APT, "purge", "synguard"], env=APT_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "synguard" not in dpkg_state()
        assert not os.path.lexists(EXAMPLE) and not os.path.lexists("/etc/synguard")
    finally:
        run(["dpkg", "--purge", "synguard"], env=APT_ENV)
        if pulled_in:
            run([*APT, "purge", *sorted(pulled_in)], env=APT_ENV)
    assert "synguard" not in dpkg_state()
    assert not installed(dpkg_state()) & pulled_in
