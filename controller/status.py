"""What `synguard status` says and /metrics exports: one snapshot of a
protected interface, read from its pins, its run state and the interface.

"Protected" is decided here, once: the XDP and tc programs on the interface
are the ones synguard pinned for it and recorded in the run state, attach
got to the end, and the controller runs (or is gone but left a data path a
restart adopts). Anything else is not protected, with the reason.
"""

import time

from . import datapath, layout, netlink, syncache
from .oniface import adoptable, inspect
from .runstate import RunState, controller_lock_held, state_path
from .settings import current


def protection(ifname):
    """(protected, reason, RunState or None): reason says why not, or,
    when protected, anything worth knowing ('' otherwise)."""
    state = RunState.load(ifname)
    if state is None:
        # A controller holds the lock from its first step, before anything
        # is written: it is compiling or checking.
        if controller_lock_held(state_path(ifname)):
            return False, "attach is still under way", None
        return False, "not attached", None
    idx = netlink.ifindex(ifname)
    if not idx or idx != state.ifindex:
        return False, "the interface is gone (attached to ifindex %d)" % state.ifindex, state
    if state.phase == "attaching":
        alive = state.controller_alive()
        return False, "attach is still under way" if alive else "attach did not finish", state
    on = inspect(ifname, idx)
    pinned = on.pinned
    if not on.xdp_id:
        return False, "no XDP program on %s" % ifname, state
    if on.xdp_id != state.xdp_prog_id or on.xdp_id != pinned[datapath.XDP_PROG]:
        return False, "the XDP program on %s (id %d) is not synguard's" % (ifname, on.xdp_id), state
    if on.tc_id != state.tc_prog_id or on.tc_id != pinned[datapath.TC_PROG]:
        return False, "synguard's tc filter is missing on %s" % ifname, state
    if state.phase == "draining":
        return (
            False,
            "draining: new SYNs go to the kernel; handshakes synguard answered complete for %.0f s more"
            % max(0.0, state.drain_until - time.time()),
            state,
        )
    if state.phase == "handover":
        return (
            True,
            "handed over %.0f s ago: protection goes on, and the next attach takes it over"
            % (time.time() - state.handover_at),
            state,
        )
    if state.controller_alive():
        return True, "", state
    if adoptable(on):
        return True, "controller not running; protection goes on, and attach adopts it", state
    return False, "controller not running, and the data path cannot be adopted", state


def snapshot(maps, state, now_ns=None):
    """Everything status and /metrics show, read from the maps now."""
    now_ns = now_ns or time.monotonic_ns()
    secrets = maps.secrets.lookup(0)
    cfg = maps.config.lookup(0)
    # The run state holds the ports attach wrote; reading them back from the
    # 65536-slot listeners map takes 13 ms, too much for every scrape.
    ports = state.ports if state else maps.ports()
    plain, families = maps.read_counters_by_family()
    ours = not state or state.cookies != "kernel"  # the kernel's cookies have no key of ours
    return {
        "interface": state.ifname if state else None,
        "netns": state.netns if state else None,
        "mode": state.mode if state else "unknown",
        "cookies": state.cookies if state else "unknown",
        "ports": ports,
        "controller_pid": state.pid if state else None,
        "rotate_seconds": state.rotate_seconds if state and ours else None,
        "key_age_seconds": round((now_ns - secrets.rotated_ns) / 1e9, 3) if ours else None,
        "key_rotations": secrets.rotations if ours else None,
        "fleet": bool(secrets.fleet),
        "metrics_addr": state.metrics_addr if state else "",
        "monitor": bool(cfg.flags & layout.CF_MONITOR),
        "phase": state.phase if state else "unknown",
        "drain_remaining_seconds": round(max(0.0, state.drain_until - time.time()), 1)
        if state and state.phase == "draining"
        else None,
        "sysctls_changed": dict(state.sysctls) if state else {},
        "settings": current(cfg),
        "syncache": syncache.status(maps, now_ns),
        "syncache_limit": cfg.cachelimit,
        "config": {
            "mss4": cfg.mss4,
            "mss6": cfg.mss6,
            "window": cfg.window,
            "wscale": cfg.wscale,
            "ttl": cfg.ttl,
            "wscale_ok": bool(cfg.flags & layout.CF_WSCALE),
            "sack_ok": bool(cfg.flags & layout.CF_SACK),
            "timestamps_ok": bool(cfg.flags & layout.CF_TIMESTAMPS),
            "ecn_ok": bool(cfg.flags & layout.CF_ECN),
            "conntrack": bool(cfg.flags & layout.CF_CONNTRACK),
        },
        "counters": {
            name: plain[name] if name in plain else families["inet"][name] + families["inet6"][name]
            for name in layout.counter_names()
        },
        "counters_by_family": families,
        "counters_familyless": plain,
    }
