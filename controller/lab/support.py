"""Set-up shared by the tests, the benchmarks and the soak: the data path
compiled once with private pins, run with BPF_PROG_TEST_RUN inside a
namespace that has a real dual-stack listener (the programs' socket lookups
then find what they would on a server), and a running controller's status."""

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

from .. import host, layout
from ..datapath import Datapath
from ..keys import KeyRotator
from . import netns

PORT = 8080
# An interface's config as attach would derive it (MTU 1500, Linux's options).
CONFIG = dict(
    mss4=1460,
    mss6=1440,
    window=65535,
    wscale=7,
    ttl=64,
    flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS,
    ext_opts=8,  # kernelconf.ext_limits() under Linux's defaults
    ext_len8=255,
)
# The maps the data path changes as it runs (the others are the controller's).
RUNTIME_MAPS = (
    b"handoffs",
    b"syncache",
    b"syncache_state",
    b"syncache_buckets",
    b"reply_tat",
    b"rst_tat",
    b"verified",
    b"limited",
)


@contextlib.contextmanager
def listening_namespace(prefix, port=PORT):
    """A private network namespace with lo up and a dual-stack listener on
    port; yields its name and removes it afterwards."""
    name = "%s-%s" % (prefix, secrets.token_hex(3))
    netns.create(name)
    try:
        with netns.netns(name):
            listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", port))
            listener.listen(64)
            yield name
        finally:
            listener.close()
    finally:
        netns.remove(name)


@contextlib.contextmanager
def compiled(prefix, syncache_max=65536, **datapath):
    """(Datapath, Maps) with pins in a directory of their own; removed after."""
    host.ensure_bpffs()
    pins = os.path.join(layout.PIN_ROOT, "%s-%s" % (prefix, secrets.token_hex(3)))
    try:
        dp = Datapath(pins, syncache_max, **datapath)
    except BaseException:
        shutil.rmtree(pins, ignore_errors=True)  # a refused build leaves no pins
        raise
    maps = dp.open_maps()
    try:
        yield dp, maps
    finally:
        maps.close()
        dp.close()
        shutil.rmtree(pins, ignore_errors=True)
        try:
            os.rmdir(layout.PIN_ROOT)
        except OSError:
            pass


def clear(dp):
    """Empty syncache, no pause, no recent hand-offs, fresh rate limits."""
    for name in RUNTIME_MAPS:
        dp.bpf[name].clear()


def configure(dp, maps, ports=(PORT,), keys=True, **config):
    """The data path as after attach: config (the seed's defaults unless
    given), ports, fresh keys (unless keys=False: cookies made before stay
    valid), and nothing the data path made before."""
    fields = {**CONFIG, **layout.SETTING_DEFAULTS, **config}
    if fields.pop("monitor"):
        fields["flags"] |= layout.CF_MONITOR
    maps.config.update(0, layout.Config(**fields).derive())
    maps.set_ports(list(ports))
    if keys:
        KeyRotator(maps.secrets).install_initial()
    clear(dp)


def wait_until(predicate, timeout, every=0.05):
    """predicate()'s first true value within timeout seconds (polled), else
    its last value: synchronisation on what is awaited, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


def connections_made(cookies, before, after):
    """Connections made between two readings of the counters: synguard's
    hand-offs with its own cookies; with the kernel's (no hand-off), the
    ACKs handed up to the kernel's cookie check or from the syncache."""
    counters = ("completed",) if cookies == "synguard" else ("recvcookie", "expanded")
    return sum(after[k] - before[k] for k in counters)


def load_conntrack():
    """Where nf_conntrack is a module (Debian's kernels) and nothing loaded
    it yet, load it: its sysctls and kfuncs exist only then."""
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_tcp_loose"):
        subprocess.run(["modprobe", "nf_conntrack"], check=False)


def on_interface(bed):
    """Everything synguard may leave on the server's interface: XDP (id,
    mode), our tc place, every ingress filter, the qdiscs; the pins, the
    run state and the lock; the sysctl attach may change."""
    from .. import netlink, oniface

    with netns.netns(bed.server_ns):
        idx = netlink.ifindex(bed.server_if)
        xdp = netlink.xdp_query(idx)
        ours = netlink.tc_query(idx, oniface.TC_HANDLE, oniface.TC_PRIORITY)
        syncookies = host.read_sysctl("net.ipv4.tcp_syncookies")

    def tc(what, *where):
        argv = ["tc", "-n", bed.server_ns, what, "show", "dev", bed.server_if, *where]
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {
        "xdp": xdp,
        "tc": ours,
        "filters": tc("filter", "ingress"),
        "clsact": "clsact" in tc("qdisc"),
        "pins": os.path.exists(bed.pins()),
        "run files": sorted(  # the run state, the lock, a takeover request
            f for f in os.listdir(os.path.dirname(bed.state_path())) if f.startswith(bed.server_if + ".")
        )
        if os.path.isdir(os.path.dirname(bed.state_path()))
        else [],
        "sysctls": {"net.ipv4.tcp_syncookies": syncookies},
    }


def status(bed, *args):
    """`synguard status --json` of a running controller in bed's server
    namespace, which must say protected (exit 0)."""
    r = bed.synguard_run("status", bed.server_if, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
