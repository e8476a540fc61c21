"""The controller: `synguard attach` in the foreground until it is stopped.

Everything that can fail without touching the interface comes first (the
AF_PACKET socket for retransmissions, then, once the interface is ours,
the metrics endpoint's address), then attach; then, every tick, the
syncache timer, key rotation on time, the watch on the listeners, on our
programs and on the reflection limit. The signals:

  SIGHUP          reload: the config file read again and applied to the
                  running data path (ports, settings, rotation period,
                  metrics address); a bad file changes nothing
  SIGUSR1         rotate the cookie key now (`synguard rotate`)
  SIGTERM, SIGINT stop: drain (new SYNs go to the kernel again, handshakes
                  in flight complete), then take everything off; but if
                  systemd is restarting the unit, hand over instead: leave
                  the data path protecting for the controller it starts next
  again, SIGQUIT  stop now, without the drain (`detach --now`)

A new controller may also ask this one to hand over (attach --takeover, or
any attach while this one drains): it then stops its loop and lets go of
the interface without touching it, and waits to be stopped.
"""

import errno
import logging
import os
import signal
import threading
import time

from . import attach, firewall, host, journal, layout, liveconfig, netlink, supervisor, wire
from .formats import format_ports
from .listeners import mptcp_ports
from .options import UsageError
from .runstate import takeover_path
from .settings import SETTINGS, raw_fields, show
from .syncache import Syncache

log = logging.getLogger("synguard")

# The longest drain: a handshake whose SYN-ACK went out just before the stop
# completes within seconds; this bounds the drain when the keys rotate
# slowly (--rotate-seconds), and TimeoutStopSec= in the unit covers it.
DRAIN_MAX_SECONDS = 60.0
# A limit that dropped nothing for this long has stopped.
LIMIT_QUIET_SECONDS = 10.0


def _packet_socket(ifname):
    try:
        return wire.PacketSocket(ifname, layout.TIMER_BATCH)
    except PermissionError:
        raise attach.AttachError("retransmitting SYN-ACKs (AF_PACKET) needs CAP_NET_RAW") from None
    except OSError as e:
        raise attach.AttachFailed("cannot send on %s: %s" % (ifname, e.strerror)) from None


def metrics_refusal(addr, e):
    """The line for a metrics address that cannot be bound: who holds the
    port, where that can be seen."""
    line = "cannot serve metrics on %s: %s" % (addr, e.strerror or e)
    if e.errno == errno.EADDRINUSE:
        holder = host.listener_of(int(addr.rsplit(":", 1)[1]))
        line += " (%sanother port: --metrics-addr, or metrics_addr in the config file)" % (
            "%s, pid %d, listens there; " % (holder[1], holder[0]) if holder else ""
        )
    return line


class Signals:
    """What the signals asked for, set from handlers, read by the loop."""

    def __init__(self):
        self.wake = threading.Event()
        self.stops = 0  # SIGTERM/SIGINT so far
        self.now = False  # SIGQUIT, or a second stop: no drain
        self.reload = False
        self.rotate = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGQUIT, self._set("now"))
        signal.signal(signal.SIGHUP, self._set("reload"))
        signal.signal(signal.SIGUSR1, self._set("rotate"))

    def _stop(self, *_):
        self.stops += 1
        self.now = self.now or self.stops > 1
        self.wake.set()

    def _set(self, what):
        def handler(*_):
            setattr(self, what, True)
            self.wake.set()

        return handler

    @property
    def stopping(self):
        return self.stops > 0 or self.now

    def wait(self, seconds):
        self.wake.wait(max(0.0, seconds))
        self.wake.clear()


class Metrics:
    """The /metrics endpoint, rebound by a reload."""

    def __init__(self):
        self.server = self.collector = None

    def bind(self, addr):
        """Serve addr (nothing for ""), then let the old endpoint go; OSError,
        and the old one kept, if addr cannot be bound."""
        server = collector = None
        if addr:
            from .metrics import serve

            server, collector = serve(addr)
            collector.attached = self.collector.attached if self.collector else None
        self.close()
        self.server, self.collector = server, collector

    def close(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        self.server = None


def run(opts, reread=None):
    """Attach with AttachOptions opts, protect until stopped, then drain and
    detach, hand over or leave. reread() gives the options anew (the config
    file read again) for a reload. Returns the exit code."""
    journal.setup()  # under systemd: <3> errors, <4> warnings for journalctl -p
    # Installed first: the run state that names our pid exists only after this.
    sigs = Signals()
    metrics = Metrics()

    def claimed():
        try:
            metrics.bind(opts.metrics_addr)
        except OSError as e:
            raise attach.AttachError(metrics_refusal(opts.metrics_addr, e)) from e

    sock = a = None
    how = "stop"
    try:
        ready = attach.preflight(opts)
        sock = _packet_socket(opts.iface)
        a = attach.attach(opts, ready, claimed)
        for note in a.notes:
            log.info("%s", note)
        say_attached(opts, a)
        if metrics.collector:
            metrics.collector.attached = a
        ctl = Controller(opts, a, sock, metrics, sigs, reread)
        how = ctl.protect()
        if how == "stop":
            how = ctl.stop()
        if how == "handed over":  # the port and the lock go first: the new one waits for them
            metrics.close()
            a.close()
            a = None
            ctl.wait_for_stop()
    finally:
        metrics.close()
        if a:
            a.close()
            if how in ("stop", "error"):
                attach.detach(opts.iface, a.state)
        if sock:
            sock.close()
    print(FAREWELL[how] % opts.iface, flush=True)
    return 1 if how == "error" else 0


FAREWELL = {
    "stop": "synguard: detached from %s",
    "error": "synguard: detached from %s",
    "handover": "synguard: left the data path on %s protecting, for the controller started next",
    "handed over": "synguard: handed %s over to the new controller",
}


def say_attached(opts, a):
    if a.adopted:
        log.info(
            "adopted the data path left attached on %s (%s XDP): keys, %d syncache entries and counters "
            "kept%s",
            opts.iface,
            a.state.mode,
            a.maps.syncache_state.lookup(0).entries,
            "" if opts.mode in ("auto", a.state.mode) else "; detach first to change the mode",
        )
    elif a.shared:
        log.info(
            "replaced the data path on %s in place, on its maps: %s",
            opts.iface,
            ", ".join(a.shared),
        )
    for port in mptcp_ports(opts.ports) if a.state.cookies == "synguard" else ():
        log.warning(
            "port %d has an MPTCP listener: the hand-off (bpf_sk_assign_tcp_reqsk) refuses those, so "
            "its SYNs go to the kernel, unprotected (counted as mptcp)",
            port,
        )
    monitor = a.maps.config.lookup(0).flags & layout.CF_MONITOR
    print(attached_line(opts, a.state.mode, a.state.cookies, monitor), flush=True)


def attached_line(opts, mode, cookies, monitor=False):
    """The line attach prints once the interface is protected (the README
    quotes it: tests/deploy/test_deploy.py holds it to this)."""
    return "synguard: %s %s ports %s (%s XDP, %s, %s)" % (
        "monitoring" if monitor else "protecting",
        opts.iface,
        format_ports(opts.ports),
        mode,
        "the kernel's cookies"
        if cookies == "kernel"
        else "synguard's cookies, key rotation every %gs" % opts.rotate_seconds,
        "metrics on http://%s/metrics" % opts.metrics_addr if opts.metrics_addr else "no metrics",
    )


class Controller:
    """The controller's loop over one attached data path."""

    def __init__(self, opts, a, sock, metrics, sigs, reread=None):
        self.opts, self.a, self.keys, self.metrics, self.sigs = opts, a, a.keys, metrics, sigs
        self.reread = reread
        self.cache = Syncache(a.maps, a.dp.timer_fd, wire=sock)
        self.fw = FirewallWatch(a, opts)
        self.limit = LimitWatch(a.maps, opts.iface)
        self.watched = config_stamp(opts.config) if opts.watch_config else None

    def protect(self):
        """Until stopped: 'stop', 'handed over' or 'error'."""
        return self._loop(until=None)

    def stop(self):
        """SIGTERM/SIGINT came: hand over if systemd restarts us, else drain
        and return 'stop' (detach follows), unless told to stop now or taken
        over meanwhile."""
        if self.sigs.now:
            return "stop"
        if supervisor.restarting():
            self.a.state.phase, self.a.state.handover_at = "handover", time.time()
            self.a.state.save()
            log.info(
                "systemd restarts %s: the data path stays, protecting, for the next controller",
                self.opts.iface,
            )
            return "handover"
        seconds = min(DRAIN_MAX_SECONDS, self.keys.due_in() + self.keys.period)
        state = self.a.state
        state.phase, state.drain_until = "draining", time.time() + seconds
        state.save()
        liveconfig.apply(self.a.maps, state, raw_fields(self.a.maps.config.lookup(0)))
        log.info(
            "draining %s for %.0f s: new SYNs go to the kernel; handshakes synguard answered complete "
            "(again, or SIGQUIT: stop now)",
            self.opts.iface,
            seconds,
        )
        how = self._loop(until=time.monotonic() + seconds)
        return "stop" if how == "drained" else how

    def wait_for_stop(self):
        """Handed over: idle until stopped, touching nothing (a supervisor
        that restarts exited processes must not start us again meanwhile)."""
        while not self.sigs.stopping:
            self.sigs.wait(3600)

    def _loop(self, until):
        """Ticks until stopped ('stop'), until `until` ('drained'), taken
        over ('handed over') or our program is gone ('error'). A tick is a
        quarter of the first retransmission delay, at most 250 ms."""
        while True:
            tick = min(0.25, self.a.maps.config.lookup(0).rexmt_ms / 4000)
            wake = min(tick, self.keys.due_in())
            if until is not None:
                wake = min(wake, until - time.monotonic())
            self.sigs.wait(wake)
            if self.sigs.now or (until is None and self.sigs.stopping):
                return "stop"
            if os.path.exists(takeover_path(self.opts.iface)):
                log.info("%s: a new controller takes over", self.opts.iface)
                return "handed over"
            if until is not None and time.monotonic() >= until:
                return "drained"
            self.cache.tick()
            if until is None:
                self.limit.check()
                self._maybe_reload()
            if not self._rotate():
                return "error"

    def _rotate(self):
        """Rotate on time or on request, and then check our program and the
        firewall. False if our XDP program is gone."""
        asked = self.sigs.rotate
        if asked:
            self.sigs.rotate = False
            if self.keys.refused:
                log.warning("SIGUSR1: %s", self.keys.refused)
            else:
                self.keys.rotate_now()
                log.info("cookie key rotated on request (SIGUSR1)")
        if self.keys.due_in() > 0 and not asked:
            return True
        if not asked:
            self.keys.rotate()
        prog_id, _ = netlink.xdp_query(self.a.state.ifindex)
        if prog_id != self.a.state.xdp_prog_id:
            log.error("the XDP program on %s was replaced or removed by someone else", self.a.state.ifname)
            return False
        self.fw.check()
        keep_mode_sysctls(self.a)
        return True

    def _maybe_reload(self):
        if self.watched is not None:
            stamp = config_stamp(self.opts.config)
            if stamp != self.watched:
                self.watched = stamp
                self.sigs.reload = True
        if self.sigs.reload:
            self.sigs.reload = False
            self.reload()

    def reload(self):
        """The config file read again and applied to the running data path;
        one line in the log either way, and a bad file changes nothing."""
        if self.reread is None:
            log.warning("reload: started without --config, nothing to read again")
            return
        try:
            new = self.reread()
            changes = reload_changes(self.opts, new)
        except (UsageError, ValueError, attach.AttachError) as e:
            log.error("reload refused, the running config kept: %s", e)
            return
        a, state = self.a, self.a.state
        try:
            liveconfig.check(a.maps, state, new.settings)
            if "metrics_addr" in changes:
                self.metrics.bind(new.metrics_addr)
        except liveconfig.ConfigRefused as e:
            log.error("reload refused, the running config kept: %s", e)
            return
        except OSError as e:
            log.error("reload refused, the running config kept: %s", metrics_refusal(new.metrics_addr, e))
            return
        if "settings" in changes:
            liveconfig.apply(a.maps, state, new.settings)
        if "ports" in changes:
            a.maps.set_ports(new.ports)
        if "rotate_seconds" in changes:
            self.keys.reschedule(new.rotate_seconds)
        self.opts = new
        self.fw.opts = new
        state.ports, state.rotate_seconds, state.metrics_addr = (
            sorted(new.ports),
            new.rotate_seconds,
            new.metrics_addr,
        )
        state.flag_settings = list(new.flag_settings)
        state.save()
        log.info("reloaded %s: %s", new.config, "; ".join(changes.values()) or "nothing changed")


# What a reload may change in place; the rest needs a new data path or a
# new key schedule: a restart (which hands over without a gap).
RELOADABLE = ("ports", "settings", "rotate_seconds", "metrics_addr")
FIXED = ("mode", "cookies", "fleet_key", "conntrack")


def reload_changes(old, new):
    """{what: how it changes} from AttachOptions old to new; ValueError if
    new changes what a reload cannot."""
    for name in FIXED:
        if getattr(old, name) != getattr(new, name):
            raise ValueError(
                "%s cannot change on reload (%r to %r): restart synguard, which hands over without a gap"
                % (name, getattr(old, name), getattr(new, name))
            )
    if new.rotate_seconds != old.rotate_seconds and (new.fleet_key or new.cookies == "kernel"):
        raise ValueError(
            "rotate_seconds cannot change on reload %s"
            % (
                "in fleet mode (every host derives the same epochs)"
                if new.fleet_key
                else "with the kernel's cookies"
            )
        )
    changes = {}
    if sorted(old.ports) != sorted(new.ports):
        changes["ports"] = "ports %s -> %s" % (format_ports(old.ports), format_ports(new.ports))
    was, now = dict(old.settings), dict(new.settings)
    if was != now:
        names = [n for n, s in SETTINGS.items() if was.get(s.field) != now.get(s.field)]
        changes["settings"] = " ".join(
            show(
                {n: SETTINGS[n].show(now.get(SETTINGS[n].field, layout.SETTING_DEFAULTS[SETTINGS[n].field]))}
            )
            for n in names
        )
    if old.rotate_seconds != new.rotate_seconds:
        changes["rotate_seconds"] = "key rotation every %gs" % new.rotate_seconds
    if old.metrics_addr != new.metrics_addr:
        changes["metrics_addr"] = "metrics on %s" % (new.metrics_addr or "nothing")
    return changes


def config_stamp(path):
    """What tells a changed config file (--watch-config): a ConfigMap is
    updated by a symlink swap, so the file reached through it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LimitWatch:
    """One log line when the reflection limit starts dropping SYNs on the
    interface, with the heaviest prefixes of those it dropped lately, and
    one when it has dropped nothing for LIMIT_QUIET_SECONDS."""

    def __init__(self, maps, ifname, clock=time.monotonic):
        self.maps, self.ifname, self.clock = maps, ifname, clock
        self.last = maps.read_counters()["ratelimited"]
        self.seen = self._sampled()
        self.since = self.quiet_since = None
        self.checked = clock()
        self.dropped = 0

    def _sampled(self):
        return [r.n for r in self.maps.limited.lookup(0)]

    def heaviest(self, top=3):
        """['198.19.7.0/24 (41 of 64)', ...]: prefixes of the SYNs the limit
        dropped since the last look, by the samples the data path keeps."""
        import ipaddress

        cfg = self.maps.config.lookup(0)
        tally, total = {}, 0
        rings = self.maps.limited.lookup(0)
        for ring, before in zip(rings, self.seen):
            for i in range(max(before, ring.n - layout.LIMITED_SAMPLES), ring.n):
                a = ring.src[i % layout.LIMITED_SAMPLES].ip()
                bits = cfg.prefix4 if a.version == 4 else cfg.prefix6
                net = ipaddress.ip_network("%s/%d" % (a, bits), strict=False)
                tally[net] = tally.get(net, 0) + 1
                total += 1
        self.seen = [r.n for r in rings]
        best = sorted(tally.items(), key=lambda kv: -kv[1])[:top]
        return ["%s (%d of %d)" % (net, n, total) for net, n in best]

    def check(self):
        now = self.clock()
        if now - self.checked < 1.0:
            return
        self.checked = now
        count = self.maps.read_counters()["ratelimited"]
        new, self.last = count - self.last, count
        if new:
            self.dropped += new
            self.quiet_since = None
            if self.since is None:
                self.since = now
                log.warning(
                    "reflection limit on %s: dropping SYNs from prefixes over their budget that never "
                    "completed a handshake (%d in the last second); heaviest: %s",
                    self.ifname,
                    new,
                    ", ".join(self.heaviest()) or "unknown",
                )
            return
        if self.since is None:
            return
        if self.quiet_since is None:
            self.quiet_since = now
        elif now - self.quiet_since >= LIMIT_QUIET_SECONDS:
            log.warning(
                "reflection limit on %s: stopped dropping; %d SYNs dropped over %.0f s",
                self.ifname,
                self.dropped,
                self.quiet_since - self.since,
            )
            self.since = self.quiet_since = None
            self.dropped = 0
            self.seen = self._sampled()


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
        state = self.a.state
        if not fw.insert or state.fw_insert:
            return
        if not state.conntrack_built:
            self._once(
                "the firewall now needs conntrack entries for handed-off connections (%s), and this "
                "data path was built without them: restart synguard" % fw.reason
            )
            return
        state.fw_insert, state.fw_noscale = fw.insert, fw.noscale
        liveconfig.apply(self.a.maps, state, raw_fields(self.a.maps.config.lookup(0)))
        for note in fw.apply(state.sysctls):
            log.warning("firewall changed: %s", note)
        state.save()


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
