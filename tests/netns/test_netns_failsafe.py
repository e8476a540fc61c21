"""A failed attach changes nothing: at every point where attach can fail,
the XDP program and the tc filters on the interface are exactly what they
were (by program id), with the sysctls, pins and run state as before. And
`status` says protected (exit 0) only when it is."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from synguard import attach, netlink, oniface
from synguard.lab import netns
from synguard.lab.support import on_interface as interface
from synguard.lab.testbed import SERVER4, EchoServer, Testbed
from synguard.options import AttachOptions

pytestmark = pytest.mark.netns
PORT = 8080


@pytest.fixture
def foreign():
    """A test bed whose server interface already has someone else's XDP
    program (native), and tcp_syncookies=0, which attach would change."""
    from bcc import BPF

    with Testbed() as bed:
        other = BPF(text=b"int other(struct xdp_md *ctx) { return XDP_PASS; }")
        with netns.netns(bed.server_ns):
            netlink.xdp_attach(
                netlink.ifindex(bed.server_if), other.load_func(b"other", BPF.XDP).fd, "native"
            )
        bed.sysctl(bed.server_ns, "net.ipv4.tcp_syncookies", 0)
        try:
            yield bed
        finally:
            other.cleanup()


def attach_in(bed, **kw):
    """attach.attach in the server namespace, in this process (so that a
    step can be made to fail)."""
    opts = AttachOptions(bed.server_if, [PORT], **{"force": True, **kw})
    with netns.netns(bed.server_ns):
        return attach.attach(opts, attach.preflight(opts))


def fail(monkeypatch, module, name, after=0):
    """Make module.name raise EIO from its (after+1)th call on."""
    real, calls = getattr(module, name), []

    def failing(*a, **kw):
        calls.append(a)
        if len(calls) > after:
            raise OSError(errno.EIO, "%s failed (test)" % name)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize(
    "step",
    [
        "clsact",  # creating the qdisc
        "tc",  # attaching our filter
        "xdp",  # the XDP swap itself
        "check",  # the check after the swap: the old program goes back
        "pins",  # moving the pins into place, the last step
    ],
)
def test_a_failure_at_any_step_leaves_the_interface_as_it_was(foreign, monkeypatch, step):
    bed = foreign
    before = interface(bed)
    assert before["xdp"][0] and not before["tc"] and not before["pins"]
    if step == "clsact":
        fail(monkeypatch, netlink, "clsact_create")
    elif step == "tc":
        fail(monkeypatch, netlink, "tc_attach")
    elif step == "xdp":
        fail(monkeypatch, netlink, "xdp_attach")
    elif step == "check":
        fail(monkeypatch, netlink, "tc_query", after=1)  # the second query: after the swap
    elif step == "pins":
        fail(monkeypatch, os, "rename")
    # A runtime failure (exit code 1); the driver's refusal of XDP is a
    # refusal (2): --mode generic is the way.
    with pytest.raises(attach.AttachError if step == "xdp" else attach.AttachFailed) as e:
        attach_in(bed)
    assert "left as it was" in str(e.value) and "failed (test)" in str(e.value)
    monkeypatch.undo()
    assert interface(bed) == before


def test_refusals_come_before_anything_is_touched(foreign):
    """A taken metrics port, a driver without native XDP, a foreign tc
    filter at our place: each refused, nothing changed."""
    bed = foreign
    before = interface(bed)
    with netns.netns(bed.server_ns):
        taken = socket.socket()
    taken.bind(("127.0.0.1", 9717))
    taken.listen(1)
    try:
        r = bed.synguard_run("attach", bed.server_if, "--ports", str(PORT), "--force")
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
        with open("/proc/self/comm") as f:
            me = f.read().strip()
        assert r.stderr == (
            "synguard: error: attach failed, %s left as it was: cannot serve metrics on 127.0.0.1:9717: "
            "Address already in use (%s, pid %d, listens there; another port: --metrics-addr, or "
            "metrics_addr in the config file)\n" % (bed.server_if, me, os.getpid())
        )
    finally:
        taken.close()
    assert interface(bed) == before

    r = bed.synguard_run("attach", "lo", "--ports", str(PORT), "--mode", "native", "--no-metrics")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "synguard: error: the driver of lo has no native XDP (its XDP features lack BASIC): "
        "use --mode generic"
    )

    from bcc import BPF

    other_tc = BPF(text=b"int tcother(struct __sk_buff *skb) { return -1; }")
    with netns.netns(bed.server_ns):
        idx = netlink.ifindex(bed.server_if)
        netlink.clsact_create(idx)
        netlink.tc_attach(
            idx, other_tc.load_func(b"tcother", BPF.SCHED_CLS).fd, "tcother", 1, oniface.TC_PRIORITY
        )
    try:
        before = interface(bed)
        r = bed.synguard_run("attach", bed.server_if, "--ports", str(PORT), "--force", "--no-metrics")
        assert r.returncode == 2 and "that is not synguard's" in r.stderr
        assert interface(bed) == before
    finally:
        other_tc.cleanup()


def test_a_read_only_proc_sys_is_one_clear_line_and_nothing_attached(foreign):
    """In a container /proc/sys is read-only: attach needs
    tcp_syncookies=1 (the fixture set 0), cannot set it, says so in one line
    naming the sysctl and what to do, exits 2 and leaves all as it was."""
    bed = foreign
    before = interface(bed)
    assert before["sysctls"]["net.ipv4.tcp_syncookies"] == ["0"]
    argv = [sys.executable, "-m", "synguard.cli", "attach", bed.server_if, "--ports", str(PORT)]
    # A private mount namespace with /proc/sys bound read-only, as in a container.
    script = 'mount --bind -o ro /proc/sys /proc/sys && exec "$@"'
    r = netns.run(
        bed.server_ns,
        ["unshare", "--mount", "sh", "-c", script, "sh", *argv, "--force", "--no-metrics"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode, r.stderr) == (
        2,
        "synguard: error: attach failed, %s left as it was: cannot set net.ipv4.tcp_syncookies=1 "
        "(Read-only file system: a container's /proc/sys?): set it on the host first "
        "(sysctl -w net.ipv4.tcp_syncookies=1, and in /etc/sysctl.d to keep it), or run synguard "
        "privileged\n" % bed.server_if,
    )
    assert "protecting" not in r.stdout
    assert interface(bed) == before


def test_force_replaces_and_detach_leaves_no_trace_but_the_foreign_program_is_gone(foreign):
    bed = foreign
    srv = EchoServer(bed, PORT)
    try:
        proc = bed.attach([PORT], "--no-metrics", "--force")
        assert bed.connect(SERVER4, PORT)["echo_ok"]
        assert interface(bed)["sysctls"]["net.ipv4.tcp_syncookies"] == ["1"]
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(30) == 0
        after = interface(bed)
        assert after["xdp"] == (0, None) and not after["tc"] and not after["clsact"]
        assert after["sysctls"]["net.ipv4.tcp_syncookies"] == ["0"]  # set back
    finally:
        srv.close()


def test_status_says_protected_only_when_it_is():
    """Polled from the moment attach starts: exit 1 ("attach is still under
    way", "not attached") until XDP and tc are on; 0 from then on, also
    with the controller killed (protection goes on), and 1 after detach."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            proc = bed.synguard(
                "attach",
                bed.server_if,
                "--ports",
                str(PORT),
                "--no-metrics",
                stdout=subprocess.PIPE,
                text=True,
            )
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r = bed.synguard_run("status", bed.server_if)
                on = interface(bed)
                ours = bool(on["xdp"][0]) and bool(on["tc"])
                seen.append((r.returncode, ours))
                if r.returncode == 0:
                    break
                assert r.stderr.strip().startswith("synguard: %s is not protected: " % bed.server_if)
            assert seen[-1] == (0, True), seen
            assert all(code == 1 for code, _ in seen[:-1]) and len(seen) > 3, seen
            assert "protecting" in proc.stdout.readline()

            proc.kill()
            proc.wait()
            r = bed.synguard_run("status", bed.server_if)
            assert r.returncode == 0 and "controller not running; protection goes on" in r.stdout
            assert bed.synguard_run("detach", bed.server_if, "--now").returncode == 0
            r = bed.synguard_run("status", bed.server_if)
            assert r.returncode == 1 and "not protected: not attached" in r.stderr
        finally:
            srv.close()
