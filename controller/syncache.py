"""The syncache's user-space half: driving the seed's syncache_timer,
syncache_pcblist and the pause's log lines.

The data path (bpf/xdp_synguard.c) makes, matches and removes entries, and
keeps in each the SYN-ACK it sent. The timer itself is a BPF program too
(bpf/syncache_timer.c): here the keys are read in batches and handed to it,
64 to a run; it removes stale entries and, while the syncache is paused,
all of them (cookies carry those connections), reschedules the due ones
with the seed's backoff (base x 1, 2, 4, 8) and leaves their SYN-ACKs in
the rexmt map, which are sent from here as they are on the interface
through AF_PACKET (wire.py, one system call for a run's), not through the
kernel's TCP. The entry counts that cachelimit and bucketlimit are checked
against stay exact, because only BPF changes them.
"""

import collections
import ctypes
import errno
import ipaddress
import logging
import time

from . import layout, libbpf

log = logging.getLogger("synguard")
TC_ACT_OK = 0


def describe(key, e, now_ns):
    """One entry as `synguard list` shows it (the seed's syncache_pcblist)."""
    client, server, cport, sport = key.endpoints()
    return {
        "local": "%s:%d" % (_fmt(server), sport),
        "remote": "%s:%d" % (_fmt(client), cport),
        "family": "inet6" if key.ipv6 else "inet",
        "state": "SYN_RECEIVED",
        "age_seconds": round((now_ns - e.added_ns) / 1e9, 3),
        "retransmits": e.rxmits,
        "next_retransmit_seconds": round((e.rxt_ns - now_ns) / 1e9, 3),
        "irs": e.irs,
        "iss": e.iss,
        "mss": e.peer_mss,
        "wscale": e.snd_wscale if e.flags & layout.SCF_WINSCALE else None,
        "sack": bool(e.flags & layout.SCF_SACK),
        "timestamps": bool(e.flags & layout.SCF_TIMESTAMP),
        "ecn": bool(e.flags & layout.SCF_ECN),
        "unreach": bool(e.flags & layout.SCF_UNREACH),
    }


def _fmt(raw):
    addr = ipaddress.ip_address(raw)
    return "[%s]" % addr if addr.version == 6 else str(addr)


def status(maps, now_ns=None):
    """The syncache's size and pause, as status and /metrics show them."""
    now_ns = now_ns or time.monotonic_ns()
    st = maps.syncache_state.lookup(0)
    return {
        "entries": st.entries,
        "paused": st.pause_until_ns > now_ns,
        "pause_remaining_seconds": max(0.0, round((st.pause_until_ns - now_ns) / 1e9, 3)),
        "pause_backoff": st.backoff,
        "pauses": st.pauses,
    }


class Syncache:
    """Timer, listing and pause state for one interface's syncache."""

    def __init__(self, maps, timer_fd, wire=None):
        """wire: a wire.PacketSocket bound to the interface, for the
        retransmissions (None: the timer counts them but sends nothing)."""
        self.maps = maps
        self.timer_fd = timer_fd
        self.wire = wire
        self._paused = None
        self._next_scan = 0  # before it no entry can be due (monotonic ns)
        self._req = layout.TimerRequest()
        self._key_size = ctypes.sizeof(layout.Flow)
        self._test_run = libbpf.TestRun(
            timer_fd, bytes(self._req), in_size=ctypes.sizeof(self._req) + layout.TIMER_BATCH * self._key_size
        )

    def entries(self):
        return self.maps.syncache.items()

    def state(self):
        return self.maps.syncache_state.lookup(0)

    def tick(self, now_ns=None):
        """syncache_timer: retransmit what is due, expire what has had its
        retransmissions, flush everything while paused. Returns
        (retransmitted, removed). Reads nothing but the state and the config
        when no entry can be due yet: every entry made since the last scan
        is due no earlier than that scan plus one base interval."""
        now_ns = now_ns or time.monotonic_ns()
        st = self.state()
        cfg = self.maps.config.lookup(0)
        paused = cfg.syncookies and st.pause_until_ns > now_ns
        sent = {False: 0, True: 0}
        removed = 0
        if st.entries and (paused or now_ns >= self._next_scan):
            earliest = now_ns + cfg.rexmt_ms * 1_000_000
            for keys, _values, n in self.maps.syncache.batches():
                raw = memoryview(keys).cast("B")[: n * self._key_size]
                while raw:
                    r = self._run(now_ns, raw[: layout.TIMER_BATCH * self._key_size])
                    self._send(r.rexmt, sent)
                    removed += r.removed
                    earliest = min(earliest, r.next_ns)
                    raw = raw[r.keys * self._key_size :]  # what the run did not take
            self._next_scan = earliest
            for v6, n in sent.items():
                self.maps.add_counters(v6, retransmitted=n)
        self._log_pause(st, now_ns)
        return sent[False] + sent[True], removed

    def _run(self, now_ns, keys):
        """One run of the timer program over keys (raw struct sg_flow
        bytes); returns the request as it came back."""
        req = self._req
        req.now_ns = now_ns
        req.keys = len(keys) // self._key_size
        self._test_run.feed(req, keys)
        verdict, _ = self._test_run.run()
        if verdict != TC_ACT_OK:  # it took no key: the frame was short
            raise OSError(errno.EPROTO, "the syncache timer refused its request (verdict %d)" % verdict)
        return layout.TimerRequest.from_buffer_copy(self._test_run.output()[: ctypes.sizeof(req)])

    def _send(self, count, sent):
        """Send the first count SYN-ACKs of the rexmt map as they are;
        sent: {ipv6: n} to add to."""
        if not count:
            return
        _, frames, _ = next(self.maps.rexmt.batches(chunk=layout.TIMER_BATCH))
        frames = frames[:count]
        failed = {}
        if self.wire:
            failed = self.wire.send_batch([(ctypes.addressof(f.frame), f.len) for f in frames])
        # One line per reason and run, not per frame: a link that is down
        # refuses all 64.
        for strerror, n in sorted(collections.Counter(failed.values()).items()):
            log.warning("cannot retransmit %s: %s", "a SYN-ACK" if n == 1 else "%d SYN-ACKs" % n, strerror)
        for i, f in enumerate(frames):
            if i not in failed:
                sent[bool(f.ipv6)] += 1

    def _log_pause(self, st, now_ns):
        """One log line per transition of the pause (the seed logs it too);
        st: the syncache's state as the tick read it."""
        paused = st.pause_until_ns > now_ns
        if paused and not self._paused:
            log.warning(
                "syncache overflow: cookies only for the next %.1f s (pause %d since attach)",
                (st.pause_until_ns - now_ns) / 1e9,
                st.pauses,
            )
        elif self._paused and not paused:
            log.info("syncache resumed after its pause")
        self._paused = paused
