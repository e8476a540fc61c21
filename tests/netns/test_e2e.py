"""The end-to-end suite (synguard.lab.e2e) on namespace hosts, and what CI can
check of the Vagrant VMs that run the same suite: the Vagrantfile
validates, its addresses are the suite's, its provisioning installs."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from synguard.lab.testbed import LanBed

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
VAGRANT = os.path.join(ROOT, "vagrant")
VAGRANTFILE = os.path.join(VAGRANT, "Vagrantfile")

STEPS = [
    "before attach",
    "attach",
    "SYN flood",
    "ACK flood",
    "metrics",
    "kill -9 and restart",
    "stop (SIGTERM: drain)",
    "established connection",
]


@pytest.mark.root
@pytest.mark.parametrize("cookies", ["synguard", "kernel"])
def test_suite_passes_on_namespace_hosts(tmp_path, cookies):
    out = tmp_path / "e2e.json"
    argv = ["--rate", "20000", "--seconds", "4", "--json", str(out), "--cookies", cookies]
    r = subprocess.run(
        [sys.executable, "-m", "synguard.lab.e2e", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: PASS" in r.stdout
    result = json.loads(out.read_text())
    assert [s["name"] for s in result["steps"]] == STEPS
    steps = {s["name"]: s["figures"] for s in result["steps"]}
    assert steps["attach"]["xdp_mode"] == "native"
    assert steps["SYN flood"]["sendcookie"] > 40000  # 80,000 sent, some lost on the bridge
    ack = steps["ACK flood"]
    assert ack["refused"] > 70000 and ack["kernel_rsts"] == 0
    assert 0 < ack["rsts"] <= 10000 * 5  # the RST budget: 4 s of flood and a second's burst
    assert steps["established connection"]["error"] is None
    # Nothing of the suite is left behind: no namespaces, no work files.
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not re.search(r"sg-\w+-(lan|server|client|attacker)\b", netns), netns
    assert not [f for f in os.listdir("/tmp") if f.startswith("synguard-e2e-")]


@pytest.mark.root
def test_vagrantfile_validates():
    r = subprocess.run(["vagrant", "validate"], cwd=VAGRANT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr


def test_vagrant_hosts_are_the_suites_hosts():
    """The VMs have the namespace hosts' addresses and the suite's default
    server address, and a kernel with bpf_sk_assign_tcp_reqsk (>= 6.9)."""
    text = open(VAGRANTFILE).read()
    ips = dict(re.findall(r'"(server|client|attacker)"\s*=>\s*\{\s*ip:\s*"([\d.]+)"', text))
    assert ips == {"server": LanBed.SERVER, "client": LanBed.CLIENT, "attacker": LanBed.ATTACKER}
    e2e = open(os.path.join(ROOT, "controller", "lab", "e2e.py")).read()
    assert '"--server-ip", default="%s"' % LanBed.SERVER in e2e
    assert 'ENV.fetch("SYNGUARD_BOX", "debian/trixie64")' in text  # Debian 13: Linux 6.12


@pytest.mark.root
def test_vagrant_provisioning_installs_on_this_machine(tmp_path):
    """The Vagrantfile's provisioning script, run here (into a scratch venv;
    what it links and installs under /usr/local and /etc is put back as it
    was after)."""
    script = re.search(r"PROVISION = <<~SH\n(.*?)\nSH\n", open(VAGRANTFILE).read(), re.S).group(1)
    assert "/synguard/deploy/install.sh" in script
    script = script.replace("/synguard/deploy/install.sh", os.path.join(ROOT, "deploy", "install.sh"))
    script = script.replace("install.sh ", "install.sh --venv %s " % (tmp_path / "venv"), 1)
    link = "/usr/local/bin/synguard"
    link_before = os.readlink(link) if os.path.islink(link) else None
    made = [p for p in ("/etc/systemd/system/synguard@.service", "/etc/synguard") if not os.path.lexists(p)]
    try:
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        v = subprocess.run([link, "--version"], capture_output=True, text=True)
        assert v.returncode == 0 and v.stdout.startswith("synguard "), v.stdout + v.stderr
        assert shutil.which("trafgen")
        assert os.path.exists("/etc/systemd/system/synguard@.service")
    finally:
        if os.path.lexists(link):
            os.unlink(link)
        if link_before:
            os.symlink(link_before, link)
        for p in made:
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.unlink(p)


@pytest.mark.parametrize("cookies", ["auto", "synguard", "kernel"])
def test_the_suite_knows_the_servers_cookie_mode_as_attach_will(cookies):
    """--rotate-seconds is refused with the kernel's cookies, so the suite
    resolves --cookies auto on the server (a remote one too) as attach
    will: Debian 11's e2e step failed on it."""
    from synguard import datapath
    from synguard.lab import e2e

    assert e2e.KFUNC == datapath.KFUNC
    here = e2e.Host("server", ["sh", "-c"], "synguard")
    suite = e2e.Suite(here, here, here, "198.18.50.10", 1, 1, cookies=cookies)
    assert suite.server_cookies() == (datapath.cookie_mode("auto") if cookies == "auto" else cookies)


def test_suite_runs_as_a_file():
    """vagrant/e2e.sh and vagrant/qemu/lan.sh run controller/lab/e2e.py as a file
    with the driving machine's python3, outside the venv: then controller/
    is sys.path[0], where synguard's own modules must not shadow the
    standard library's (secrets.py once did)."""
    r = subprocess.run(
        ["python3", os.path.join(ROOT, "controller", "lab", "e2e.py"), "--help"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    assert "--ssh-config" in r.stdout


@pytest.mark.parametrize("script", ["e2e.sh", "box.sh"])
def test_vagrant_scripts_are_valid_bash_with_usage(script):
    """make vagrant-e2e and vagrant-box are not run in CI (tens of minutes
    of emulation); their scripts parse and print their usage."""
    sh = os.path.join(VAGRANT, script)
    assert subprocess.run(["bash", "-n", sh]).returncode == 0
    r = subprocess.run([sh, "--help"], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and f"usage: vagrant/{script}" in r.stdout


def test_vagrantfile_takes_the_libvirt_driver_and_isolates_local_boxes():
    text = open(VAGRANTFILE).read()
    assert 'ENV.fetch("SYNGUARD_LIBVIRT_DRIVER", "kvm")' in text
    assert 'lv.management_network_mode = LOCAL_BOX ? "none" : "nat"' in text
    assert 'management_network_address = "198.18.' in text  # the test ranges only


@pytest.mark.parametrize("script", ["build-image.sh", "boot.sh", "lan.sh", "guest-test.sh"])
def test_qemu_scripts_are_valid_bash(script):
    """make vm-test and vm-lan are not run in CI (many minutes of emulation);
    their scripts at least parse, and those a user calls print their usage."""
    sh = os.path.join(VAGRANT, "qemu", script)
    assert subprocess.run(["bash", "-n", sh]).returncode == 0
    if script != "guest-test.sh":
        r = subprocess.run([sh, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and f"usage: vagrant/qemu/{script}" in r.stdout


@pytest.mark.root
def test_image_build_chroot_leaves_this_machines_dev_alone(tmp_path):
    """build-image.sh runs package scripts in a chroot (chroot.sh's in_chroot).
    Its /dev is a tmpfs of its own, not this machine's bind-mounted: there
    Debian 13's tmpfiles rule once set the host's /dev/kvm to 0660 and the
    chroot's kvm group. What such a rule does, done in the chroot here, does
    not reach this machine's nodes, and no mount is left after."""
    chroot_sh = os.path.join(VAGRANT, "qemu", "chroot.sh")
    root = tmp_path / "root"
    for d in ("proc", "sys", "dev", "usr"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink("/" + link):
            os.symlink(os.readlink("/" + link), root / link)
    # Inside: the chroot's nodes changed the way tmpfiles and udev rules do.
    inside = """set -e
      [ ! -e /dev/kvm ]
      mountpoint -q /dev/pts
      grep -qE '^sysfs /sys sysfs ro[,\\ ]' /proc/self/mounts
      mknod /dev/kvm c 10 232
      for f in /dev/kvm /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/pts/ptmx; do
        chmod 0606 "$f"; chgrp 4242 "$f"
      done
      echo > /dev/null
      exit 7"""
    # This machine's /usr read-only in the chroot, for its shell and tools.
    script = """set -u
      . "$1"
      before=$(host_dev_state)
      unshare --mount --propagation private -- bash -c '
        mount --bind /usr "$1/usr" && mount -o remount,bind,ro "$1/usr"
        . "$0"; in_chroot "$1" /usr/bin/bash -c "$2"' "$1" "$2" "$3"
      echo "rc=$?"
      after=$(host_dev_state)
      [ "$before" = "$after" ] && echo same || echo "changed: $before / $after"
      echo "$after" | grep -c .
    """
    r = subprocess.run(
        ["bash", "-c", script, "test", chroot_sh, str(root), inside],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = r.stdout.split()
    assert lines[:2] == ["rc=7", "same"], r.stdout + r.stderr
    assert int(lines[2]) >= 6  # /dev/null, zero, random, urandom, tty, ptmx at least were compared
    mounts = open("/proc/self/mounts").read()
    assert str(root) not in mounts
    assert os.listdir(root / "dev") == [] and os.listdir(root / "proc") == []


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--nic", "rtl8139"], "lan.sh: --nic virtio|vmxnet3|e1000e, not rtl8139"),
        (["--topology", "bridge"], "lan.sh: --topology plain|bond-ab|bond-lacp|vlan|vlan-parent, not bridge"),
        (["--nic"], "lan.sh: --nic needs a value (try --help)"),
        (["--topology", "vlan", "--bond"], "lan.sh: unknown option --bond (try --help)"),
    ],
)
def test_lan_sh_refuses_bad_options_in_one_line(argv, line):
    """Bad input to make vm-lan's script: one line, exit 2, before any
    guest, namespace or tap exists."""
    refused_in_one_line("lan.sh", argv, line)


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["--steps", "attach,bogus"],
            "boot.sh: unknown step bogus (known: attach, unit, demo, e2e, xdp, firewall, all)",
        ),
        (["--steps"], "boot.sh: --steps needs a value (try --help)"),
        (["--suite", "sid"], "boot.sh: --suite trixie|bookworm|bullseye, not sid"),
    ],
)
def test_boot_sh_refuses_bad_options_in_one_line(argv, line):
    """The same for make vm-test's script, before any guest is booted."""
    refused_in_one_line("boot.sh", argv, line)


def refused_in_one_line(script, argv, line):
    sh = os.path.join(VAGRANT, "qemu", script)

    def netns():
        return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    before = netns()
    r = subprocess.run([sh, *argv], capture_output=True, text=True, cwd="/")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", line + "\n")
    assert netns() == before


class FakeServer:
    """The suite's hosts, answering the commands of its attach step as a
    server whose attach put XDP on in xdp_mode (1 native, 2 generic)."""

    def __init__(self, xdp_mode):
        self.xdp_mode, self.scripts = xdp_mode, []
        self.name, self.synguard, self.python = "server", "synguard", "python3"

    def sh(self, script, input=None, timeout=120, check=True):
        self.scripts.append(script)
        out, rc = "", 0
        if script.startswith("setsid "):
            out = "4242\n"
        elif script.startswith("cat ") and script.endswith("attach.log"):
            out = "synguard: protecting eth1.100 ports 8080 (...)\n"
            if self.xdp_mode == 2:
                out = "synguard: the driver of eth1.100 has no native XDP (...): generic mode\n" + out
        elif script.startswith("cat ") and script.endswith("connects.json"):
            out = json.dumps({"ok": 3, "total": 3, "median_ms": 1, "p99_ms": 1})
        elif script.startswith("ip -j link show "):
            out = json.dumps([{"xdp": {"mode": self.xdp_mode}}])
        elif script.startswith("kill -0 "):
            rc = 1  # the connect loop has ended
        return subprocess.CompletedProcess(script, rc, out, "")

    def spawn(self, command, log):
        return int(self.sh("setsid %s >%s 2>&1 </dev/null & echo $!" % (command, log)).stdout)

    def json(self, script):
        return json.loads(self.sh(script).stdout)


@pytest.mark.parametrize(
    "asked, attached, ok",
    [
        ("native", 1, True),
        ("native", 2, False),
        ("generic", 2, True),
        ("generic", 1, False),
        ("auto", 1, True),
        ("auto", 2, True),
    ],
)
def test_the_suite_attaches_in_the_mode_asked_and_checks_it(asked, attached, ok):
    """e2e --xdp-mode: attach gets --mode MODE on the interface --server-if
    names; the attach step fails on another mode than asked, and with auto
    takes either and shows which (lan.sh --nic e1000e, --topology vlan)."""
    from synguard.lab import e2e

    server = FakeServer(attached)
    suite = e2e.Suite(server, server, server, "198.18.50.10", 1, 1, cookies="kernel", xdp_mode=asked)
    suite.server_if = "eth1.100"
    suite.workdir = "/tmp/e2e-test"
    suite.do_attach()
    step = suite.steps[-1]
    assert step.ok is ok
    assert step.figures["xdp_mode"] == {1: "native", 2: "generic"}[attached]
    said = "the driver of eth1.100 has no native XDP (...): generic mode"
    assert step.figures.get("attach_said") == (said if attached == 2 else None)
    (cmd,) = [s for s in server.scripts if " attach " in s]
    assert "synguard attach eth1.100 --ports 8080 --mode %s " % asked in cmd


@pytest.mark.parametrize("name", ["eth1;reboot", "a" * 16, "eth1 x", ""])
def test_e2e_refuses_a_bad_server_if(name):
    """--server-if goes into the server's shell commands: only a name
    synguard would take, with --hosts ssh; else exit 2 before any host."""
    r = subprocess.run(
        ["python3", os.path.join(ROOT, "controller", "lab", "e2e.py"), "--hosts", "ssh"]
        + ["--ssh-config", "/nonexistent", "--server-if", name],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        "e2e.py: error: --server-if takes an interface name (1-15 of a-z, 0-9, '._-@') and --hosts ssh"
    )
