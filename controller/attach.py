"""Attach, adopt, take over and detach: putting the data path on an
interface and taking it off, so that a failure never leaves the interface
worse than it was, and a restart or an upgrade never leaves it bare.

attach() first checks everything that can be checked without touching the
interface (the name, privileges, bcc, the kernel's kfunc, the driver's XDP,
what is attached now, the firewall), then builds the new data path on the
side (compiled, loaded, configured, pinned in a staging directory), and
only then changes the interface: sysctls, tc, XDP, each step with its undo.
If any step fails, the undos run in reverse, so XDP and tc are exactly as
before (a program that --force replaced is put back) and the error is
raised.

A data path of ours already on the interface is never taken off first:
- built from the same sources and left by a controller that is gone (a
  crash, or a restart's handover): adopted as it is, nothing compiled;
- else (an upgrade, a bigger syncache): the new one is built beside it on
  the very maps it can share (datapath.share: the keys, so cookies already
  issued stay valid, and the syncache where its layout is the same), then
  replaces it in one step per hook.
A controller still running hands over first when it is draining, or when
asked to (--takeover): the new one builds while the old one protects, then
asks, waits for its lock, and swaps.
"""

import errno
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field

from . import datapath, firewall, fleet, host, keys, layout, libbpf, liveconfig, maps, netlink
from .datapath import TC_PROG, XDP_PROG
from .oniface import TC_HANDLE, TC_PRIORITY, adoptable, inspect
from .runstate import (
    ControllerLock,
    RunState,
    pid_ns,
    pin_dir,
    remove_state,
    staging_dir,
    takeover_path,
    valid_ifname,
)

# How long a new controller waits for a running one to hand over (its loop
# looks for the request every tick, at most 250 ms).
TAKEOVER_SECONDS = 10.0


class AttachError(Exception):
    """Bad input or a refused attach: reported as one line, exit code 2."""


class AttachFailed(Exception):
    """Attach could not be done (the compiler, the kernel, netlink), and
    left the interface as it was: one line, exit code 1."""


@dataclass
class Attached:
    """A data path on the interface, and the controller's hold on it."""

    dp: object  # datapath.Pinned
    maps: object
    state: RunState
    lock: ControllerLock
    keys: object  # the key source on maps.secrets (keys.source_for)
    adopted: bool = False
    notes: list = field(default_factory=list)  # what attach changed on the host, for the log
    shared: list = field(default_factory=list)  # maps carried over from the data path replaced

    def close(self):
        self.maps.close()
        self.dp.close()
        self.lock.close()


class Claim:
    """The controller's lock on an interface: taken at once, or, where a
    controller runs that is draining (a stop in progress) or that opts ask
    to replace (--takeover), once that one has handed over (take())."""

    def __init__(self, opts):
        self.ifname, self.lock, self.previous = opts.iface, None, None
        try:
            self.lock = ControllerLock(opts.iface)
        except FileExistsError:
            state = RunState.load(opts.iface)
            if not (opts.takeover or (state and state.phase == "draining")):
                raise AttachError(
                    "%s is already protected by a running synguard%s; --takeover replaces it "
                    "without a gap" % (opts.iface, " (pid %d)" % state.pid if state else "")
                ) from None
            self.previous = state

    def take(self, timeout=TAKEOVER_SECONDS):
        """The lock, from the running controller if need be: it sees the
        request, stops its loop and lets go. AttachError if it does not."""
        if self.lock:
            return self.lock
        path = takeover_path(self.ifname)
        with open(path, "w") as f:
            f.write("%d\n" % os.getpid())
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self.lock = ControllerLock(self.ifname)
                    return self.lock
                except FileExistsError:
                    if time.monotonic() > deadline:
                        pid = self.previous.pid if self.previous else 0
                        raise AttachError(
                            "the controller of %s (pid %d) did not hand over within %g s (one from "
                            "before takeovers?): stop it first" % (self.ifname, pid, timeout)
                        ) from None
                    time.sleep(0.05)
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self):
        """After a failed attach: the lock goes, and its file too where no
        run state says a data path of ours stays."""
        if not self.lock:
            return
        if RunState.load(self.ifname) is None:
            self.lock.drop()
        else:
            self.lock.close()


@dataclass(frozen=True)
class Ready:
    """What the pre-flight found: the interface, and the cookie mode the
    kernel gives (auto resolved)."""

    ifindex: int
    cookies: str  # 'synguard' or 'kernel'


def preflight(opts):
    """Everything that can be checked before anything is built or touched,
    checked once: the interface, privileges, bcc, the kernel, and what the
    cookie mode allows of opts (UsageError). Returns Ready."""
    ifindex = check_interface(opts.iface)
    cookies = check_kernel(opts.cookies)
    opts.check_mode(cookies)
    return Ready(ifindex, cookies)


def check_interface(ifname):
    """Refuse what cannot be attached; returns the ifindex."""
    if not valid_ifname(ifname):
        raise AttachError("invalid interface name %r" % ifname)
    idx = netlink.ifindex(ifname)
    if not idx:
        raise AttachError("no interface named %s in this network namespace" % ifname)
    return idx


def check_kernel(cookies="auto"):
    """Refuse a kernel or a process that cannot attach; returns the cookie
    mode it gets ('synguard' or 'kernel') for cookies (COOKIE_MODES)."""
    if os.geteuid() != 0:
        raise AttachError("attaching needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_NET_RAW)")
    # Found, not imported: importing it maps LLVM, which only the short-lived
    # build process may (datapath.build).
    if importlib.util.find_spec("bcc") is None:
        raise AttachError("bcc is missing: install python3-bpfcc (deploy/install.sh)")
    try:
        return datapath.cookie_mode(cookies)
    except datapath.ModeError as e:
        raise AttachError(str(e)) from None


def pick_mode(opts, on):
    """The XDP mode to attach in, decided before touching anything, and a
    note for the log when --mode auto takes generic. A data path of ours
    that is replaced keeps its mode unless another is asked for: the
    kernel holds one mode at a time, so a change of mode cannot be one
    atomic swap."""
    native = netlink.native_xdp(on.ifindex)
    if opts.mode == "native" and native is False:
        raise AttachError(
            "the driver of %s has no native XDP (its XDP features lack BASIC): use --mode generic"
            % opts.iface
        )
    if opts.mode == "auto":
        if on.ours:
            return on.xdp_mode, None
        if native is False:
            return "generic", (
                "the driver of %s has no native XDP (its XDP features lack BASIC): generic mode" % opts.iface
            )
        return "native", None
    return opts.mode, None


def check_place(opts, on):
    """Refuse to take over what is not ours unless told to."""
    if on.tc_id and on.tc_id != on.pinned.get(TC_PROG):
        raise AttachError(
            "%s has a tc ingress filter at synguard's place (handle %d, priority 0x%x, program id %d) "
            "that is not synguard's: remove it first (tc filter del dev %s ingress pref %d)"
            % (opts.iface, TC_HANDLE, TC_PRIORITY, on.tc_id, opts.iface, TC_PRIORITY)
        )
    if on.xdp_id and not on.ours and not opts.force:
        raise AttachError(
            "%s already has an XDP program (id %d%s); --force replaces it"
            % (opts.iface, on.xdp_id, _named(on.xdp_id))
        )


def _named(prog_id):
    name = libbpf.prog_name(prog_id)
    return ", %r" % name if name else ""


def attach(opts, ready, claimed=lambda: None):
    """Load, pin and attach; or adopt what a controller that is gone (or
    hands over) left attached. ready: preflight(opts). claimed() runs once
    the interface is ours to change (the lock held), before anything on it
    changes. Returns Attached."""
    claim = Claim(opts)
    try:
        host.ensure_bpffs()
        on = inspect(opts.iface, ready.ifindex)
        fw = check_firewall(opts)
        # A data path that cannot make the conntrack entries the rule set
        # now needs is replaced, not adopted.
        if (
            on.ours
            and adoptable(on)
            and on.state.cookies == ready.cookies
            and (not fw.insert or on.state.conntrack_built)
        ):
            claim.take()
            claimed()
            try:
                # as the previous controller left it (a draining one may
                # have finished meanwhile: then there is nothing to adopt)
                on = inspect(opts.iface, ready.ifindex)
                if adoptable(on):
                    return adopt(opts, ready.cookies, on, claim.lock, fw)
            except host.SysctlRefused as e:
                raise AttachError(e.strerror) from None
        check_place(opts, on)
        mode, note = pick_mode(opts, on)
        return _attach_new(opts, ready.cookies, on, mode, fw, claim, claimed, [note] if note else [])
    except BaseException:
        claim.close()
        raise


def check_firewall(opts):
    try:
        return firewall.check(opts.ports, opts.iface, opts.conntrack)
    except firewall.FirewallRefusal as e:
        raise AttachError(str(e)) from None


def _take_options(state, opts, fw):
    """What this attach says, into the run state of the data path it keeps
    or makes."""
    state.pid, state.pid_ns = os.getpid(), pid_ns()
    state.ports = sorted(opts.ports)
    state.rotate_seconds = opts.rotate_seconds
    state.metrics_addr = opts.metrics_addr
    state.config, state.flag_settings = opts.config, list(opts.flag_settings)
    state.fw_insert, state.fw_noscale = fw.insert, fw.noscale
    state.phase, state.drain_until, state.handover_at = "protecting", 0.0, 0.0


def configure(m, state, opts):
    """The settings and ports of opts into the maps m of state's data path."""
    try:
        liveconfig.apply(m, state, opts.settings)
    except liveconfig.ConfigRefused as e:
        raise AttachError(str(e)) from None
    m.set_ports(opts.ports)


def key_source(opts, cookies, secrets_map):
    """The data path's key source, on its secrets map (keys.source_for)."""
    try:
        return keys.source_for(cookies, opts.rotate_seconds, opts.fleet_key)(secrets_map)
    except fleet.FleetKeyError as e:  # the key file changed since the options were read
        raise AttachError(str(e)) from None


def adopt(opts, cookies, on, lock, fw):
    """Take over a data path left attached: keep its keys (cookies already
    sent stay valid), its syncache and its counters; apply this attach's
    ports and settings (a drain the last controller began ends here)."""
    state = on.state
    dp = datapath.Pinned(state.pins)
    try:
        m = dp.open_maps()
    except BaseException:
        dp.close()
        raise
    try:
        source = key_source(opts, cookies, m.secrets)
        _take_options(state, opts, fw)
        configure(m, state, opts)
        notes = mode_sysctls(cookies, state.sysctls) + fw.apply(state.sysctls)
    except BaseException:
        m.close()
        dp.close()
        raise
    state.save()
    return Attached(dp, m, state, lock, source, adopted=True, notes=notes)


class _Undo:
    """Undo steps, run newest first; each runs even if an earlier one fails."""

    def __init__(self):
        self.steps = []

    def push(self, fn, *args):
        self.steps.append((fn, args))

    def run(self):
        while self.steps:
            fn, args = self.steps.pop()
            try:
                fn(*args)
            except Exception:
                pass


def _attach_new(opts, cookies, on, mode, fw, claim, claimed, notes):
    pins = pin_dir(opts.iface)
    staging = staging_dir(pins)
    shutil.rmtree(staging, ignore_errors=True)
    # A data path of ours in the same cookie mode is carried over: the maps
    # it can share, the sysctls as they were before the first attach, its
    # clsact qdisc. Any other is put back as it was if this attach fails.
    carry = on.ours and on.state is not None and on.state.cookies == cookies
    state = RunState(
        opts.iface,
        on.ifindex,
        host.netns_id(),
        os.getpid(),
        mode,
        sorted(opts.ports),
        opts.rotate_seconds,
        source_hash=datapath.source_hash(),
        cookies=cookies,
        map_layouts=maps.signatures(),
    )
    _take_options(state, opts, fw)
    state.phase = "attaching"
    undo = _Undo()
    held = []  # fds of programs we may have to put back
    shared = []
    dp = m = None
    try:
        # 1. The new data path, beside whatever runs now (on its maps where
        # it can share them).
        cachelimit = opts.settings.get("cachelimit", layout.SYNCACHE_DEFAULTS["cachelimit"])
        size = layout.syncache_map_size(cachelimit)
        undo.push(shutil.rmtree, staging, True)
        if carry:
            shared = datapath.share(on.state.pins, staging, on.state.map_layouts, size)
        # With the conntrack code wherever it can load, so that a firewall
        # that appears later can be met without a restart (daemon.py).
        state.conntrack_built = not firewall.cannot_insert()
        dp = datapath.build(staging, size, state.conntrack_built, cookies)
        m = dp.open_maps()
        source = key_source(opts, cookies, m.secrets)
        if "secrets" not in shared:
            source.install_initial()

        # 2. The running controller, if any, hands over; from here on the
        # interface is ours to change.
        claim.take()
        claimed()
        configure(m, state, opts)

        # 3. The host: sysctls, then the run state: from here on, `synguard
        # detach` knows what to undo.
        notes += _host_step(cookies, on, state, fw, carry, undo)
        state.save()

        # 4. tc first: no validated ACK may arrive before the hand-off exists.
        _tc_step(on, dp, pins, state, undo, held)

        # 5. XDP: in place of what was there, atomically where the mode
        # allows; with --mode auto in generic where the driver refuses native.
        refused = [] if opts.mode == "auto" else None
        state.mode = _swap_xdp(on, dp.xdp_fd, mode, pins, undo, held, refused)
        for why in refused or ():
            notes.append("the driver of %s refused native XDP (%s): generic mode" % (opts.iface, why))

        # 6. Check, and move the pins where status, detach and a restart look.
        now_xdp = netlink.xdp_query(on.ifindex)
        now_tc = netlink.tc_query(on.ifindex, TC_HANDLE, TC_PRIORITY)
        if now_xdp != (dp.ids[XDP_PROG], state.mode) or now_tc != dp.ids[TC_PROG]:
            raise OSError(errno.EAGAIN, "the programs on %s changed while attaching" % opts.iface)
        shutil.rmtree(pins, ignore_errors=True)
        os.rename(staging, pins)
        dp.pins = pins
        state.xdp_prog_id, state.tc_prog_id = dp.ids[XDP_PROG], dp.ids[TC_PROG]
        state.phase = "protecting"
        state.save()
    except BaseException as e:
        undo.run()
        if on.ours and on.state:
            on.state.save()  # the data path that stays is the one it describes
        if m:
            m.close()
        if dp:
            dp.close()
        if isinstance(e, (OSError, AttachError, datapath.LoadError)):
            why = _said(e)
            # refused (exit 2: a restart would only repeat it) or failed (exit 1)
            kind = AttachError if isinstance(e, (AttachError, host.SysctlRefused)) else AttachFailed
            raise kind("attach failed, %s left as it was: %s" % (opts.iface, why)) from e
        raise
    finally:
        for fd in held:
            if fd is not None:
                os.close(fd)
    return Attached(dp, m, state, claim.lock, source, notes=notes, shared=shared)


def _said(e):
    """What went wrong, in words: an OSError's with the file it names."""
    if not isinstance(e, OSError):
        return str(e)
    if e.filename:
        return "%s: %s" % (e.filename, e.strerror)
    return e.strerror or str(e)


def _host_step(cookies, on, state, fw, carry, undo):
    """The sysctls the cookies and the firewall need, set back on detach.
    What a data path we replace changed is set back first, as its detach
    would (and again as it was if this attach fails), so that ours records
    the values from before either; one we carry over keeps its record.
    Returns what was changed, for the log."""
    if carry:
        state.sysctls = dict(on.state.sysctls)
        state.created_clsact = on.state.created_clsact
    else:
        if on.state and on.state.sysctls:
            undo.push(host.restore_sysctls, _current(on.state.sysctls))
            host.restore_sysctls(on.state.sysctls)
        undo.push(host.restore_sysctls, state.sysctls)
        undo.push(state.remove)
    notes = mode_sysctls(cookies, state.sysctls)
    return notes + fw.apply(state.sysctls) + ["firewall: %s" % w for w in fw.warnings]


def _tc_step(on, dp, pins, state, undo, held):
    """Our tc filter on the interface's ingress (and the clsact qdisc if
    there is none), in one step in place of a synguard filter there."""
    if netlink.clsact_create(on.ifindex):
        state.created_clsact = True
        undo.push(netlink.clsact_destroy, on.ifindex)
    if on.tc_id:  # a synguard filter (check_place): replaced in one step
        held.append(_pinned_fd(pins, TC_PROG))
        netlink.tc_attach(on.ifindex, dp.tc_fd, TC_PROG, TC_HANDLE, TC_PRIORITY, replace=True)
        undo.push(netlink.tc_attach, on.ifindex, held[-1], TC_PROG, TC_HANDLE, TC_PRIORITY, True)
    else:
        netlink.tc_attach(on.ifindex, dp.tc_fd, TC_PROG, TC_HANDLE, TC_PRIORITY)
        undo.push(netlink.tc_detach, on.ifindex, TC_HANDLE, TC_PRIORITY)


def _current(sysctls):
    """{name: its value now} for the names of sysctls."""
    return {name: " ".join(host.read_sysctl(name) or []) for name in sysctls}


def mode_sysctls(cookies, saved):
    """Set what the cookie mode needs in this network namespace (the old
    values into saved, for detach); returns what was changed, for the log.
    synguard: tcp_syncookies not 0 (the kernel drops a request socket the
    hand-off made while it is). kernel: tcp_syncookies=2, so that the
    kernel mints a cookie for every SYN and not only once the listener's
    SYN queue is full, and tcp_timestamps=2 where it is 1, so that the
    kernel reads the options in our TSval without a per-flow offset
    (bpf/kcookie.h)."""
    wanted = []
    if cookies == "kernel":
        wanted.append(("net.ipv4.tcp_syncookies", "2", "every SYN gets the kernel's cookie at XDP"))
        if host.read_sysctl("net.ipv4.tcp_timestamps", ["1"])[0] == "1":
            wanted.append(
                ("net.ipv4.tcp_timestamps", "2", "the kernel decodes the options our SYN-ACK's TSval carries")
            )
    elif host.read_sysctl("net.ipv4.tcp_syncookies", ["1"])[0] == "0":
        wanted.append(("net.ipv4.tcp_syncookies", "1", "the hand-off needs it"))
    return [
        "set %s=%s (%s; restored on detach)" % (name, value, why)
        for name, value, why in wanted
        if host.set_sysctl(name, value, saved)
    ]


def _pinned_fd(pins, name):
    try:
        return libbpf.obj_get(os.path.join(pins, datapath.PROG_PINS[name]))
    except OSError:
        return None


def _prog_fd(on, pins):
    """An fd of the XDP program attached now, to put it back on failure:
    from our pins, else by id (that needs CAP_SYS_ADMIN)."""
    fd = _pinned_fd(pins, XDP_PROG) if on.ours else None
    if fd is None:
        try:
            fd = libbpf.prog_fd_by_id(on.xdp_id)
        except OSError:
            return None
    return fd


def _swap_xdp(on, fd, mode, pins, undo, held, fallback=None):
    """Our XDP program on in mode, in place of what is there; its undo
    puts that back. Returns the mode it is on in. With fallback (a list:
    --mode auto), a driver that declares native XDP but refuses our program
    in native mode (an MTU too large for its XDP buffers, offloads it
    cannot turn off) gets it in generic mode, and fallback the driver's
    reason."""
    if on.xdp_id:
        old_fd = _prog_fd(on, pins)
        if old_fd is None:
            raise AttachError(
                "cannot hold the XDP program now on the interface (id %d) to put it back if attach "
                "fails: that needs CAP_SYS_ADMIN" % on.xdp_id
            )
        held.append(old_fd)
        if on.xdp_mode == mode:
            try:
                netlink.xdp_attach(on.ifindex, fd, mode, expected_fd=old_fd)
            except OSError as e:
                raise _xdp_refused(mode, e) from e
            undo.push(netlink.xdp_attach, on.ifindex, old_fd, mode, fd)
            return mode
        # The kernel holds one mode at a time: the old program goes, then ours.
        netlink.xdp_detach(on.ifindex, on.xdp_mode, expected_fd=old_fd)
        undo.push(netlink.xdp_attach, on.ifindex, old_fd, on.xdp_mode)
    try:
        netlink.xdp_attach(on.ifindex, fd, mode)
    except OSError as e:
        if fallback is None or mode != "native" or e.errno in (errno.EBUSY, errno.EEXIST):
            raise _xdp_refused(mode, e) from e
        try:
            netlink.xdp_attach(on.ifindex, fd, "generic")
        except OSError as e2:
            raise _xdp_refused("generic", e2) from e2
        fallback.append((e.strerror or str(e)).removeprefix("attach XDP: "))
        mode = "generic"
    undo.push(netlink.xdp_detach, on.ifindex, mode)
    return mode


def _xdp_refused(mode, e):
    if e.errno == errno.EBUSY:
        return AttachError("another XDP program took the interface meanwhile; --force replaces it")
    return AttachError("the driver refused XDP in %s mode: %s" % (mode, e.strerror or e))


def detach(ifname, state=None):
    """Remove what synguard attached to ifname in this network namespace:
    our XDP program, our tc filter, the clsact qdisc if we created it, the
    pins, the run state, and set the sysctls back. Only what is ours (by the
    pinned and recorded program ids) is removed. Returns a line saying what
    was done, '' if there was nothing."""
    state = state or RunState.load(ifname)
    pins = pin_dir(ifname)
    ids = datapath.pinned_ids(pins)
    ours = {ids[XDP_PROG], ids[TC_PROG]} | ({state.xdp_prog_id, state.tc_prog_id} if state else set())
    ours.discard(0)
    removed = []
    idx = netlink.ifindex(ifname)
    if idx and (not state or state.ifindex == idx):
        xdp_id, mode = netlink.xdp_query(idx)
        if xdp_id and xdp_id in ours:
            netlink.xdp_detach(idx, mode)
            removed.append("XDP program %d" % xdp_id)
        tc_id = netlink.tc_query(idx, TC_HANDLE, TC_PRIORITY)
        if tc_id and tc_id in ours:
            netlink.tc_detach(idx, TC_HANDLE, TC_PRIORITY)
            removed.append("tc filter %d" % tc_id)
        if state and state.created_clsact:
            try:
                netlink.clsact_destroy(idx)
                removed.append("the clsact qdisc")
            except OSError:
                pass
    restored = host.restore_sysctls(state.sysctls) if state else []
    for d in (pins, staging_dir(pins)):
        if os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
            if d == pins:
                removed.append("the pins")
    for d in (os.path.dirname(pins), layout.PIN_ROOT):
        try:
            os.rmdir(d)  # only when no other interface is protected
        except OSError:
            pass
    if remove_state(ifname):
        removed.append("the run state")
    said = []
    if removed:
        said.append("removed " + ", ".join(removed))
    if restored:
        said.append("set back " + ", ".join(restored))
    return "; ".join(said)
