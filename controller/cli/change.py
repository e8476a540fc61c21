"""The commands that act on a protected interface: set (settings at run
time), rotate (a key now), detach (drain, then take it all off)."""

import os
import signal
import sys
import time

from .. import attach, host, keys, netlink, oniface, running
from ..formats import num
from ..maps import Maps
from ..options import UsageError
from ..runstate import RunState, pin_dir
from ..settings import SETTINGS, current, parse_assignments, raw_fields, show
from .common import (
    Command,
    Failure,
    NotProtected,
    controller_of,
    elsewhere_hint,
    iface_argument,
    known_iface,
    open_maps,
)


def cmd_set(args):
    from .. import liveconfig

    try:
        changes = parse_assignments(args.assignments)
    except ValueError as e:
        raise UsageError(str(e)) from None
    maps = open_maps(args.iface)
    state = RunState.load(args.iface)
    if state is None:
        maps.close()
        raise NotProtected("%s is not protected" % args.iface)
    with maps:
        old = raw_fields(maps.config.lookup(0))
        settings = {**old, **changes}
        try:
            liveconfig.check(maps, state, settings)
        except liveconfig.ConfigRefused as e:
            raise UsageError(str(e)) from None
        # --save: the new config file is written beside the old one first
        # (where a read-only or full disk fails, nothing changed yet), then
        # the live change, then the rename; if the rename fails, the live
        # settings are put back.
        pending, flag_settings = save_plan(args.iface, changes) if args.save else (None, [])
        try:
            cfg = liveconfig.apply(maps, state, settings)
            if pending:
                try:
                    pending.commit()
                except ValueError as e:
                    liveconfig.apply(maps, state, old)
                    raise UsageError("--save: %s; nothing changed" % e) from None
        finally:
            if pending:
                pending.discard()
        print("synguard: %s: %s" % (args.iface, show(current(cfg))))
    if not pending:
        print(
            "synguard: %s"
            % (
                "this lasts until the controller reloads or stops (both start from its flags and --config): "
                "--save writes it into the config file"
                if state.controller_alive()
                else "no controller runs: the data path keeps this until the next attach, which starts "
                "from its flags and --config (--save writes it into the config file)"
            ),
            file=sys.stderr,
        )
        return 0
    names = [name for name, s in SETTINGS.items() if s.field in changes]
    print(
        "synguard: %s: saved %s in %s"
        % (args.iface, " ".join("%s=%s" % (n, pending.values[n]) for n in names), pending.path)
    )
    flags = [n for n in names if n in flag_settings]
    if flags:
        print(
            "synguard: warning: the controller's command line has %s, which wins over %s when it "
            "starts again" % (", ".join("--" + n.replace("_", "-") for n in flags), pending.path),
            file=sys.stderr,
        )
    return 0


def save_plan(iface, changes):
    """(configedit.Pending, the settings the controller had as flags) for
    `set --save`: the config file of iface's controller with changes
    ({sg_config field: raw}) in its [settings]."""
    from .. import configedit

    state = RunState.load(iface)
    if state is None or not state.config:
        raise UsageError(
            "--save: the controller of %s was started without --config, so there is no file to save "
            "into: start it with attach %s --config FILE (deploy/synguard.example.toml), or leave out --save"
            % (iface, iface)
        )
    if not state.same_pid_ns():
        raise UsageError(
            "--save: the controller of %s runs in another PID namespace (a container?), where its config "
            "file %s is: run set --save there" % (iface, state.config)
        )
    values = {
        name: configedit.literal(name, changes[s.field]) for name, s in SETTINGS.items() if s.field in changes
    }
    try:
        pending = configedit.prepare(state.config, values)
    except ValueError as e:
        raise UsageError("--save: %s; nothing changed" % e) from None
    return pending, state.flag_settings


def attached_things(ifname, state):
    """What of synguard's is on ifname now, as detach names it."""
    things = []
    idx = netlink.ifindex(ifname)
    if idx and state and state.ifindex == idx:
        xdp_id, _ = netlink.xdp_query(idx)
        if xdp_id and xdp_id == state.xdp_prog_id:
            things.append("XDP program %d" % xdp_id)
        tc_id = netlink.tc_query(idx, oniface.TC_HANDLE, oniface.TC_PRIORITY)
        if tc_id and tc_id == state.tc_prog_id:
            things.append("tc filter %d" % tc_id)
    if os.path.isdir(pin_dir(ifname)):
        things.append("the pins")
    if RunState.load(ifname):
        things.append("the run state")
    return things


def cmd_detach(args):
    known_iface(args.iface)
    if os.geteuid() != 0:
        raise UsageError("detaching needs root (CAP_BPF, CAP_NET_ADMIN)")
    state = RunState.load(args.iface)
    done = []
    said = lambda line: print("synguard: %s: %s" % (args.iface, line), flush=True)  # noqa: E731
    if state and state.controller_alive() and state.pid != os.getpid():
        # The controller takes its own things down and sets sysctls back:
        # what it removed is what was there before and is gone after.
        before = attached_things(args.iface, state)
        if running.stop_controller(state, args.now, said) and running.wait_exited(state.pid):
            gone = [t for t in before if t not in attached_things(args.iface, state)]
            restored = [
                "%s=%s" % (name, value)
                for name, value in state.sysctls.items()
                if host.read_sysctl(name) == value.split()
            ]
            said = "stopped the controller (pid %d), which removed %s" % (
                state.pid,
                ", ".join(gone) or "nothing",
            )
            if restored:
                said += " and set back " + ", ".join(restored)
            done.append(said)
        else:
            done.append("the controller (pid %d) did not stop" % state.pid)
    elif state and not args.now:
        drain_orphan(args.iface, state, said)
    left = attach.detach(args.iface)
    if left:
        done.append(left)
    if not done:
        hint = elsewhere_hint(args.iface)
        done.append("nothing attached" + ("; " + hint if hint else ""))
    print("synguard: %s: %s" % (args.iface, "; ".join(done)))
    return 0


def drain_orphan(iface, state, said):
    """The drain of a data path whose controller is gone (a crash): new
    SYNs to the kernel, cookies and entries already issued still handed
    off, until the keys they were minted with have rotated out (nobody
    rotates now, so: two periods from the last rotation) or at most
    DRAIN_MAX_SECONDS."""
    from .. import daemon, liveconfig
    from ..status import protection

    protected, _, _ = protection(iface)
    if not protected:
        return
    with open_maps(iface) as maps:
        age = (time.monotonic_ns() - maps.secrets.lookup(0).rotated_ns) / 1e9
        seconds = max(0.0, min(daemon.DRAIN_MAX_SECONDS, 2 * state.rotate_seconds - age))
        if not seconds:
            return
        state.phase, state.drain_until = "draining", time.time() + seconds
        liveconfig.apply(maps, state, raw_fields(maps.config.lookup(0)))
        state.save()
        said(
            "no controller runs; draining: new SYNs go to the kernel; handshakes synguard answered "
            "complete for %.0f s (detach --now skips this)" % seconds
        )
        time.sleep(seconds)


def cmd_rotate(args):
    """The controller is the one writer of the secrets map: it rotates on
    SIGUSR1 in its own loop, exactly as on time (the idle slot, then the
    flip), so two rotations never interleave. This waits until the map says
    it happened."""
    state = controller_of(args.iface, "rotate")
    with Maps(state.pins) as maps:
        s = maps.secrets.lookup(0)
        refused = keys.rotation_refused(state.cookies, s.fleet)
        if refused:
            raise UsageError("%s: %s" % (args.iface, refused))
        if not running.catches(state.pid, signal.SIGUSR1):
            raise Failure(
                "the controller of %s (pid %d) predates synguard rotate: restart it" % (args.iface, state.pid)
            )
        before = s.rotations
        os.kill(state.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            s = maps.secrets.lookup(0)
            if s.rotations != before:
                print(
                    "synguard: %s: new cookie key (rotation %d, from pid %d); cookies minted with the one "
                    "before stay valid for one more period (%ss)"
                    % (args.iface, s.rotations, state.pid, num(state.rotate_seconds))
                )
                return 0
            time.sleep(0.02)
    raise Failure("the controller of %s (pid %d) did not rotate within 5 s" % (args.iface, state.pid))


def set_arguments(st):
    iface_argument(st)
    st.add_argument(
        "assignments", nargs="+", metavar="SETTING=VALUE", help="one or more settings (listed below)"
    )
    st.add_argument(
        "--save",
        action="store_true",
        help="also write them into the [settings] of the config file the controller was started with "
        "(attach --config), keeping its other lines and comments; first the file, then the live "
        "change: if either fails, neither is changed",
    )


def detach_arguments(d):
    iface_argument(d)
    d.add_argument(
        "--now",
        action="store_true",
        help="no drain: take everything off at once (handshakes synguard answered and that have not "
        "completed get an RST)",
    )


COMMANDS = [
    Command(
        "set",
        "change settings of a running protection (until its controller reloads or stops, or --save)",
        "IFACE SETTING=VALUE [...] [--save]",
        """  sudo synguard set eth0 cachelimit=50000 rexmtlimit=2
  sudo synguard set eth0 ratelimit=200 --save    # also into its --config file
  sudo synguard set eth0 ratelimit=0             # no reflection limit
  sudo synguard set eth0 monitor=0               # from monitor mode to enforce, in place""",
        set_arguments,
        cmd_set,
    ),
    Command(
        "detach",
        "remove everything synguard attached to IFACE, after a drain (stopping its controller first)",
        "IFACE [--now]",
        """  sudo synguard detach eth0          # new SYNs to the kernel now, handshakes in flight complete
  sudo synguard detach eth0 --now    # no drain: handshakes synguard answered get an RST
  sudo nsenter --net=/run/netns/web synguard detach eth0""",
        detach_arguments,
        cmd_detach,
    ),
    Command(
        "rotate",
        "rotate IFACE's cookie key now (the running controller does it)",
        "IFACE",
        "  sudo synguard rotate eth0",
        iface_argument,
        cmd_rotate,
    ),
]
