"""Network namespaces: two namespaces each protecting their own `eth0`, and
synguard run the way most people run commands in a namespace, `ip netns
exec` (which gives each command a mount namespace and a /sys of its own)."""

import os
import subprocess
import sys

import pytest
from synguard.lab import netns
from synguard.lab.support import status
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed

pytestmark = pytest.mark.netns
PORT = 8080


def rename(bed, new):
    """Call the server's interface `new` (it must be down for that, which
    drops its IPv6 address: added again)."""
    with netns.rtnl(bed.server_ns) as ipr:
        idx = netns.index(ipr, bed.server_if)
        ipr.link("set", index=idx, state="down")
        ipr.link("set", index=idx, ifname=new)
    bed.server_if = new
    netns.address(bed.server_ns, new, SERVER6 + "/64")


def test_two_namespaces_each_protect_their_own_eth0():
    """The name has a dot as VLAN interfaces' do (eth0.5): bpffs takes no
    dots in names, the pins are under eth0:5."""
    with Testbed() as a, Testbed() as b:
        servers = [EchoServer(bed, PORT) for bed in (a, b)]
        try:
            for bed in (a, b):
                rename(bed, "eth0.5")
            procs = [bed.attach([PORT], "--no-metrics") for bed in (a, b)]
            assert a.pins() != b.pins() and a.state_path() != b.state_path()
            assert a.pins().endswith("/eth0:5") and os.path.isdir(a.pins())
            for bed in (a, b):
                assert status(bed)["protected"]
                assert bed.connect(SERVER4, PORT)["echo_ok"] and bed.connect(SERVER6, PORT)["echo_ok"]
                assert status(bed)["counters"]["completed"] == 2
            # detach in one leaves the other alone
            r = a.synguard_run("detach", "eth0.5", "--now")
            assert r.returncode == 0 and "stopped the controller (pid %d)" % procs[0].pid in r.stdout
            assert procs[0].wait(30) == 0
            assert procs[1].poll() is None
            st = status(b)
            assert st["protected"] and st["controller_pid"] == procs[1].pid
            assert b.connect(SERVER4, PORT)["echo_ok"]
            assert a.synguard_run("status", "eth0.5").returncode == 1
        finally:
            for s in servers:
                s.close()


def ip_netns_exec(bed, *args):
    return ["ip", "netns", "exec", bed.server_ns, sys.executable, "-m", "synguard.cli", *args]


def test_ip_netns_exec_works_like_nsenter():
    """attach, status, list, set and detach, each its own `ip netns exec`:
    they find one another's pins (in the host's bpffs)."""
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            argv = ip_netns_exec(bed, "attach", bed.server_if, "--ports", str(PORT), "--no-metrics")
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            bed._procs.append(proc)
            assert "protecting" in proc.stdout.readline(), proc.stderr.read()
            assert bed.connect(SERVER4, PORT)["echo_ok"]
            assert os.path.isdir(bed.pins())  # where every mount namespace sees it

            def run(*args):
                return subprocess.run(ip_netns_exec(bed, *args), capture_output=True, text=True, timeout=60)

            r = run("status", bed.server_if)
            assert r.returncode == 0 and "protected" in r.stdout and "completed" in r.stdout, r.stderr
            assert run("list", bed.server_if).returncode == 0
            assert run("set", bed.server_if, "rexmtlimit=2").returncode == 0
            r = run("detach", bed.server_if, "--now")
            assert r.returncode == 0 and "stopped the controller" in r.stdout, r.stdout + r.stderr
            assert proc.wait(30) == 0
            assert not os.path.exists(bed.pins()) and not os.path.exists(bed.state_path())
        finally:
            srv.close()
