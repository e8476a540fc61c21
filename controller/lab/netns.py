"""Network namespaces for the test bed: made, entered, wired, removed.

Entering switches only the network namespace (setns(CLONE_NEWNET)), for the
calling thread or a child process, and keeps the mount namespace, so every
command sees the host's bpffs. The links, addresses, routes and neighbours
are made over rtnetlink (pyroute2), in the namespace they belong to.
"""

import contextlib
import ctypes
import os
import subprocess

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2_netns

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: %s" % os.strerror(err))


def ns_path(name):
    return os.path.join(NETNS_RUN_DIR, name)


def ns_id(name):
    """The namespace's inode: what synguard keys its pins and run state by."""
    return os.stat(ns_path(name)).st_ino


def create(name):
    """A new named namespace (as `ip netns add`) with lo up."""
    _pyroute2_netns.create(name)
    with rtnl(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def remove(name):
    """Remove a named namespace if it exists; its interfaces go with it."""
    try:
        _pyroute2_netns.remove(name)
    except OSError:
        pass


@contextlib.contextmanager
def netns(name):
    """Run the body in network namespace `name` (this thread only). Sockets
    made inside stay in that namespace after the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_path(name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _enter(name):
    def enter():
        fd = os.open(ns_path(name), os.O_RDONLY)
        _setns(fd)
        os.close(fd)

    return enter


def popen(name, argv, **kw):
    """subprocess.Popen of argv inside network namespace `name`."""
    return subprocess.Popen(argv, preexec_fn=_enter(name), **kw)


def run(name, argv, **kw):
    """subprocess.run of argv inside network namespace `name`."""
    return subprocess.run(argv, preexec_fn=_enter(name), **kw)


@contextlib.contextmanager
def rtnl(name):
    """An rtnetlink socket (pyroute2 IPRoute) in namespace name."""
    with netns(name), IPRoute() as ipr:
        yield ipr


def index(ipr, ifname):
    return ipr.link_lookup(ifname=ifname)[0]


def veth(ns_a, if_a, ns_b, if_b, mac_a=None, mac_b=None):
    """A veth pair: if_a in ns_a, its peer if_b in ns_b, both down."""
    peer = {"ifname": if_b, "net_ns_fd": ns_b}
    if mac_b:
        peer["address"] = mac_b
    with rtnl(ns_a) as ipr:
        ipr.link("add", ifname=if_a, kind="veth", peer=peer, **({"address": mac_a} if mac_a else {}))


IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80


def address(ns, ifname, cidr, up=True):
    """Add an address (IPv6 without duplicate address detection, so it is
    usable at once) and bring the interface up."""
    addr, _, plen = cidr.partition("/")
    with rtnl(ns) as ipr:
        idx = index(ipr, ifname)
        flags = {"flags": IFA_F_NODAD} if ":" in addr else {}
        ipr.addr("add", index=idx, address=addr, prefixlen=int(plen), **flags)
        if up:
            ipr.link("set", index=idx, state="up")


def up(ns, ifname, master=None):
    with rtnl(ns) as ipr:
        idx = index(ipr, ifname)
        if master:
            ipr.link("set", index=idx, master=index(ipr, master))
        ipr.link("set", index=idx, state="up")


def bridge(ns, ifname):
    with rtnl(ns) as ipr:
        ipr.link("add", ifname=ifname, kind="bridge")
        ipr.link("set", index=index(ipr, ifname), state="up")


def route(ns, dst, via, table=None):
    with rtnl(ns) as ipr:
        ipr.route("add", dst=dst, gateway=via, **({"table": table} if table else {}))


def neigh(ns, ifname, ip, mac):
    """A permanent neighbour entry: ip is at mac."""
    with rtnl(ns) as ipr:
        ipr.neigh("add", dst=ip, lladdr=mac, ifindex=index(ipr, ifname), state=NUD_PERMANENT)


def rule_fwmark(ns, mark, table):
    with rtnl(ns) as ipr:
        ipr.rule("add", fwmark=mark, table=table)


def link_attr(ns, ifname, attr):
    """An IFLA_* attribute of an interface, e.g. IFLA_ADDRESS, IFLA_MTU."""
    with rtnl(ns) as ipr:
        return ipr.get_links(index(ipr, ifname))[0].get_attr(attr)


def set_mtu(ns, ifname, mtu):
    with rtnl(ns) as ipr:
        ipr.link("set", index=index(ipr, ifname), mtu=mtu)
