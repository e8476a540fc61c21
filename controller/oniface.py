"""What is on an interface now, as synguard sees it: the XDP program and
our tc filter attached, the run state, the pins; and whether a data path
there can be adopted as it is. Read-only: attach changes the interface,
status and /metrics only look (both come here).
"""

from dataclasses import dataclass

from . import datapath, netlink
from .datapath import TC_PROG, XDP_PROG
from .runstate import RunState, pin_dir

# Our filter's place on the ingress hook: handle 1, priority "SG".
TC_HANDLE, TC_PRIORITY = 1, 0x5347


@dataclass
class OnInterface:
    """What is on the interface now, read before anything is changed."""

    ifindex: int
    xdp_id: int
    xdp_mode: str
    tc_id: int
    state: RunState
    pinned: dict  # program name: id of the pins in this interface's directory

    @property
    def ours(self):
        """The XDP program is one synguard pinned for this interface."""
        return bool(self.xdp_id) and self.xdp_id == self.pinned.get(XDP_PROG)


def inspect(ifname, idx):
    """What is on interface ifname (index idx) now."""
    xdp_id, xdp_mode = netlink.xdp_query(idx)
    return OnInterface(
        idx,
        xdp_id,
        xdp_mode,
        netlink.tc_query(idx, TC_HANDLE, TC_PRIORITY),
        RunState.load(ifname),
        datapath.pinned_ids(pin_dir(ifname)),
    )


def adoptable(on):
    """A complete data path built from our sources whose controller is gone
    (or hands over: a restart, a stop that was draining)."""
    st = on.state
    return bool(
        st
        and st.phase in ("protecting", "handover", "draining")
        and st.source_hash == datapath.source_hash()
        and on.xdp_id == st.xdp_prog_id
        and on.tc_id == st.tc_prog_id == on.pinned.get(TC_PROG)
        and on.pinned.get(datapath.TIMER_PROG)
    )
