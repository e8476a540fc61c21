"""Interfaces, XDP and the tc hook, through rtnetlink (pyroute2).

Everything acts in the calling thread's network namespace: each call opens
its netlink socket there. Errors are OSError with the kernel's errno.
pyroute2 is imported on first use: importing it takes 150 ms, which
commands that need no netlink (list, set) should not pay.
"""

import contextlib
import errno
import socket

# XDP attach flags (include/uapi/linux/if_link.h).
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

TC_H_CLSACT_INGRESS = 0xFFFFFFF2  # parent ffff:fff2
TCA_OPTIONS = "TCA_OPTIONS"
TCA_BPF_ID = 11  # pyroute2 does not decode it (it shows as UNKNOWN)
ETH_P_ALL = 0x0003


@contextlib.contextmanager
def _rtnl(what):
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        # ext_ack: a driver's refusal in its own words ("veth: Peer MTU is
        # too large to set XDP"), not only the errno's. pyroute2 0.5
        # (Debian 11's) has no such argument: the errno alone there.
        try:
            ipr = IPRoute(ext_ack=True)
        except TypeError:
            ipr = IPRoute()
        with ipr:
            yield ipr
    except NetlinkError as e:
        raise OSError(e.code, "%s: %s" % (what, e.args[1] if len(e.args) > 1 else e)) from None


def ifindex(name):
    """The interface's index in this namespace, 0 if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def link_attrs(index):
    """{'name', 'mtu', 'kind'} of interface index."""
    with _rtnl("interface %d" % index) as ipr:
        link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return {
        "name": link.get_attr("IFLA_IFNAME"),
        "mtu": link.get_attr("IFLA_MTU"),
        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
    }


# --- XDP ---------------------------------------------------------------------

NETDEV_CMD_DEV_GET = 1
NETDEV_XDP_ACT_BASIC = 1  # XDP_ABORTED, DROP, PASS and TX in the driver


def native_xdp(index):
    """Whether the interface's driver runs XDP itself (native mode, with
    XDP_TX): True or False from the driver's declared features (the netdev
    generic netlink family, Linux >= 6.3), None where the kernel cannot tell."""
    from pyroute2.netlink import NLM_F_REQUEST, genlmsg
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    class netdev_msg(genlmsg):
        nla_map = (
            ("NETDEV_A_DEV_UNSPEC", "none"),
            ("NETDEV_A_DEV_IFINDEX", "uint32"),
            ("NETDEV_A_DEV_PAD", "none"),
            ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        )

    try:
        s = GenericNetlinkSocket()
    except OSError:
        return None
    try:
        s.bind("netdev", netdev_msg)
        msg = netdev_msg()
        msg["cmd"], msg["version"] = NETDEV_CMD_DEV_GET, 1
        msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", index)]
        reply = s.nlm_request(msg, msg_type=s.prid, msg_flags=NLM_F_REQUEST)
    except (NetlinkError, OSError):
        return None
    finally:
        s.close()
    features = reply[0].get_attr("NETDEV_A_DEV_XDP_FEATURES") if reply else None
    return None if features is None else bool(features & NETDEV_XDP_ACT_BASIC)


def xdp_query(index):
    """(program id, mode) on the interface: mode 'native' or 'generic', or
    (0, None) when nothing is attached."""
    with _rtnl("query XDP") as ipr:
        xdp = ipr.get_links(index)[0].get_attr("IFLA_XDP")
    if not xdp:
        return 0, None
    drv, skb = xdp.get_attr("IFLA_XDP_DRV_PROG_ID"), xdp.get_attr("IFLA_XDP_SKB_PROG_ID")
    if drv:
        return drv, "native"
    if skb:
        return skb, "generic"
    return 0, None


def _xdp_flags_u32():
    """pyroute2 0.7.2 (Debian 12's python3-pyroute2) sends IFLA_XDP_FLAGS as
    16 bits, big-endian, which the kernel refuses (ERANGE); 0.9 sends the
    __u32 of if_link.h. Give the older one the kernel's type."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    ifinfmsg.xdp.xdp_flags.fields = [("value", "I")]


def _xdp_set(index, fd, flags, expected_fd=None, what="attach XDP"):
    _xdp_flags_u32()
    attrs = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    with _rtnl(what) as ipr:
        ipr.link("set", index=index, IFLA_XDP={"attrs": attrs})


def xdp_attach(index, fd, mode, expected_fd=None):
    """Attach program fd in mode ('native' or 'generic'). Only where nothing
    is attached, or, with expected_fd, atomically in place of that program
    (XDP_FLAGS_REPLACE: EEXIST if another one is there by then)."""
    flags = MODE_FLAGS[mode]
    if expected_fd is None:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    else:
        flags |= XDP_FLAGS_REPLACE
    _xdp_set(index, fd, flags, expected_fd)


def xdp_detach(index, mode, expected_fd=None):
    """Remove the program attached in mode; with expected_fd only if it is
    still that program."""
    flags = MODE_FLAGS[mode] | (XDP_FLAGS_REPLACE if expected_fd is not None else 0)
    _xdp_set(index, -1, flags, expected_fd, what="detach XDP")


# --- tc: the clsact qdisc and our filter on its ingress hook --------------------


def clsact_create(index):
    """Create the clsact qdisc. True if we created it, False if it existed."""
    try:
        with _rtnl("create clsact qdisc") as ipr:
            ipr.tc("add", "clsact", index)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        raise
    return True


def clsact_destroy(index):
    with _rtnl("remove clsact qdisc") as ipr:
        ipr.tc("del", "clsact", index)


def _filter_prog_id(msg):
    options = msg.get_attr(TCA_OPTIONS)
    for slot in options["attrs"] if options else ():
        cell = slot.cell[1]
        if slot.name == "UNKNOWN" and cell.length == 8:
            nla_type = int.from_bytes(cell.data[cell.offset + 2 : cell.offset + 4], "little")
            if nla_type == TCA_BPF_ID:
                return int.from_bytes(cell.data[cell.offset + 4 : cell.offset + 8], "little")
    return 0


def tc_query(index, handle, prio):
    """Program id of the ingress bpf filter at (handle, prio), or 0."""
    try:
        with _rtnl("query tc filters") as ipr:
            filters = ipr.get_filters(index=index, parent=TC_H_CLSACT_INGRESS)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):  # no clsact qdisc
            return 0
        raise
    for f in filters:
        if f["handle"] == handle and f["info"] >> 16 == prio and f.get_attr("TCA_KIND") == "bpf":
            return _filter_prog_id(f)
    return 0


def tc_attach(index, fd, name, handle, prio, replace=False):
    """Our bpf filter (direct action, all protocols) on the ingress hook at
    (handle, prio); EEXIST if something holds that place, unless replace
    (then in one step: no packet sees neither filter)."""
    with _rtnl("attach tc filter") as ipr:
        ipr.tc(
            "replace-filter" if replace else "add-filter",
            "bpf",
            index,
            handle,
            fd=fd,
            name=name,
            parent=TC_H_CLSACT_INGRESS,
            prio=prio,
            protocol=ETH_P_ALL,
            classid=1,
            direct_action=True,
        )


def tc_detach(index, handle, prio):
    with _rtnl("detach tc filter") as ipr:
        ipr.tc(
            "del-filter",
            "bpf",
            index,
            handle,
            parent=TC_H_CLSACT_INGRESS,
            prio=prio,
            protocol=ETH_P_ALL,
        )
