"""The controller: `synguard attach` in the foreground until SIGINT/SIGTERM.

Everything that can fail without touching the interface comes first (the
metrics endpoint's address, the AF_PACKET socket for retransmissions), then
attach; then, every tick, the syncache timer, key rotation on time, the
watch on the listeners and on our programs; at the end a clean detach.
"""

import errno
import logging
import signal
import threading

from . import attach, firewall, host, journal, layout, netlink, wire
from .keys import FleetRotator, KernelCookies, KeyRotator
from .listeners import mptcp_ports
from .options import format_ports
from .syncache import Syncache

log = logging.getLogger("synguard")


def rotator_for(opts, cookies="synguard"):
    def rotator(secrets_map):
        if cookies == "kernel":
            return KernelCookies(secrets_map, opts.rotate_seconds)
        if opts.fleet_key:
            return FleetRotator(secrets_map, opts.rotate_seconds, opts.fleet_key)
        return KeyRotator(secrets_map, opts.rotate_seconds)

    return rotator


def _packet_socket(ifname):
    try:
        return wire.PacketSocket(ifname, layout.TIMER_BATCH)
    except PermissionError:
        raise attach.AttachError("retransmitting SYN-ACKs (AF_PACKET) needs CAP_NET_RAW") from None
    except OSError as e:
        raise attach.AttachError("cannot send on %s: %s" % (ifname, e.strerror)) from None


def metrics_refusal(opts, e):
    """The line for a metrics address that cannot be bound."""
    line = "cannot serve metrics on %s: %s" % (opts.metrics_addr, e.strerror or e)
    if e.errno == errno.EADDRINUSE:
        line += (
            " (another synguard's? each interface needs a port of its own: --metrics-addr, or "
            "metrics_addr in its config file)"
        )
    return line


def run(opts):
    """Attach with AttachOptions opts, protect until told to stop, detach.
    Returns the exit code."""
    journal.setup()  # under systemd: <3> errors, <4> warnings for journalctl -p
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # `synguard rotate IFACE`: a new key now, written by this process's loop
    # like every other rotation (one writer of the secrets map). Installed
    # first: the run state that names our pid exists only after this.
    rotate_now = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: rotate_now.set())

    server = collector = None
    if opts.metrics_addr:
        from .metrics import serve

        try:
            server, collector = serve(opts.metrics_addr)
        except OSError as e:
            raise attach.AttachError(metrics_refusal(opts, e)) from e
    sock = a = None
    try:
        attach.check_interface(opts.iface)
        cookies = attach.check_kernel(opts.cookies)
        opts.check_mode(cookies)  # UsageError: exit 2
        sock = _packet_socket(opts.iface)
        rotator = rotator_for(opts, cookies)
        req = opts.request()
        req.cookies = cookies
        a = attach.attach(req, rotator)
        for note in a.notes:
            log.info("%s", note)
        if a.adopted:
            log.info(
                "adopted the data path left attached on %s (%s XDP): keys, %d syncache entries and counters "
                "kept%s",
                opts.iface,
                a.state.mode,
                a.maps.syncache_state.lookup(0).entries,
                "" if opts.mode in ("auto", a.state.mode) else "; detach first to change the mode",
            )
        if collector:
            collector.attached = a
        for port in mptcp_ports(opts.ports) if cookies == "synguard" else ():
            log.warning(
                "port %d has an MPTCP listener: the hand-off (bpf_sk_assign_tcp_reqsk) refuses those, so "
                "its SYNs go to the kernel, unprotected (counted as mptcp)",
                port,
            )
        print(
            "synguard: protecting %s ports %s (%s XDP, %s, %s)"
            % (
                opts.iface,
                format_ports(opts.ports),
                a.state.mode,
                "the kernel's cookies"
                if cookies == "kernel"
                else "synguard's cookies, key rotation every %gs" % opts.rotate_seconds,
                "metrics on http://%s/metrics" % opts.metrics_addr if opts.metrics_addr else "no metrics",
            ),
            flush=True,
        )
        status = loop(stop, a, rotator(a.maps.secrets), sock, FirewallWatch(a, opts), rotate_now)
    finally:
        if server:
            server.shutdown()
        if a:
            a.close()
            attach.detach(opts.iface, a.state)
        if sock:
            sock.close()
    print("synguard: detached from %s" % opts.iface, flush=True)
    return status


class FirewallWatch:
    """The rule set may change while we run (ufw enabled after attach): at
    each key rotation it is read again, and conntrack entries are turned on
    if it now needs them. Each problem is logged once."""

    def __init__(self, a, opts):
        self.a, self.opts, self.said = a, opts, set()

    def _once(self, line):
        if line not in self.said:
            self.said.add(line)
            log.error("%s", line)

    def check(self):
        try:
            fw = firewall.check(self.opts.ports, self.opts.iface, self.opts.conntrack)
        except firewall.FirewallRefusal as e:
            self._once(str(e))
            return
        cfg = self.a.maps.config.lookup(0)
        if not fw.insert or cfg.flags & layout.CF_CONNTRACK:
            return
        if not self.a.state.conntrack_built:
            self._once(
                "the firewall now needs conntrack entries for handed-off connections (%s), and this "
                "data path was built without them: restart synguard" % fw.reason
            )
            return
        cfg.flags = fw.config_flags(cfg.flags)
        self.a.maps.config.update(0, cfg)
        for note in fw.apply(self.a.state.sysctls):
            log.warning("firewall changed: %s", note)
        self.a.state.save()


def keep_mode_sysctls(a):
    """The cookie mode's sysctls (attach.mode_sysctls) set back if someone
    changed them while attached: with tcp_timestamps back at 1, say, the
    kernel's cookies would decode a wrong window scale."""
    try:
        notes = attach.mode_sysctls(a.state.cookies, a.state.sysctls)
    except host.SysctlRefused as e:
        log.error("%s", e.strerror)
        return
    for note in notes:
        log.error("changed while attached: %s", note)
    if notes:
        a.state.save()


def loop(stop, a, keys, sock, fw, rotate_now=None):
    """Until SIGINT/SIGTERM: the syncache timer every tick (a quarter of the
    first retransmission delay, at most 250 ms); at each key rotation a check
    that our XDP program is still the one attached, and of the firewall.
    rotate_now (set on SIGUSR1) asks for a rotation at the next tick."""
    cache = Syncache(a.maps, a.dp.timer_fd, wire=sock)
    rotate_now = rotate_now or threading.Event()
    while True:
        tick = min(0.25, a.maps.config.lookup(0).rexmt_ms / 4000)
        if stop.wait(max(0.0, min(tick, keys.due_in()))):
            return 0
        cache.tick()
        asked = rotate_now.is_set()
        if asked:
            rotate_now.clear()
            if hasattr(keys, "rotate_now"):
                keys.rotate_now()
                log.info("cookie key rotated on request (SIGUSR1)")
            else:
                log.warning("SIGUSR1: %s; not rotated", keys.not_rotated)
        if keys.due_in() <= 0 or asked:
            if not asked:
                keys.rotate()
            prog_id, _ = netlink.xdp_query(a.state.ifindex)
            if prog_id != a.state.xdp_prog_id:
                log.error("the XDP program on %s was replaced or removed by someone else", a.state.ifname)
                return 1
            fw.check()
            keep_mode_sysctls(a)
