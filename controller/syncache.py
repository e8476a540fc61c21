"""The syncache's user-space half: the seed's syncache_timer, syncache_pcblist
and the pause's log lines.

The data path (bpf/xdp_synguard.c) makes, matches and removes entries; here
the entries whose retransmission time has come get their SYN-ACK again
(rebuilt byte for byte from the entry and sent on the interface through
AF_PACKET, not through the kernel's TCP), with the seed's backoff (base x 1,
2, 4, 8), and entries past rexmtlimit are removed (stale). Removal goes
through the synguard_syncache_drop BPF program, so the entry counts that
cachelimit and bucketlimit are checked against stay exact.
"""

import ctypes
import ipaddress
import logging
import struct
import time

from . import layout, libbpf, packets

log = logging.getLogger("synguard")


def synack_frame(key, e):
    """The SYN-ACK for entry e under key, as the data path sent it: same
    L2 header, ISS, options, ECN setup and TSval (the seed's
    syncache_respond reuses sc_ts), so checksums match too. After an ICMP unreachable the IPv4 DF
    bit is cleared, as the seed does."""
    client, server, cport, sport = key.endpoints()
    ts = (e.ts, e.ts_recent) if e.flags & layout.SCF_TIMESTAMP else None
    opts = packets.tcp_options(
        mss=e.mss,
        wscale=e.rcv_wscale if e.flags & layout.SCF_WINSCALE else None,
        sack=bool(e.flags & layout.SCF_SACK),
        ts=ts,
    )
    return packets.tcp_frame(
        ipaddress.ip_address(server),
        ipaddress.ip_address(client),
        sport,
        cport,
        seq=e.iss,
        ack=(e.irs + 1) & 0xFFFFFFFF,
        flags=packets.SYN | packets.ACK | (packets.ECE if e.flags & layout.SCF_ECN else 0),
        options=opts,
        window=e.wnd,
        ttl=e.ttl,
        flowlabel=e.flowlabel,
        l2=bytes(e.l2[: e.l2_len]),
        df=not e.flags & layout.SCF_UNREACH,
    )


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


class Syncache:
    """Timer, listing and pause state for one interface's syncache."""

    def __init__(self, maps, drop_fd, sock=None):
        """sock: an AF_PACKET socket bound to the interface, for the
        retransmissions (None: the timer only counts and expires)."""
        self.maps = maps
        self.drop_fd = drop_fd
        self.sock = sock
        self._paused = None

    def entries(self):
        return self.maps.syncache.items()

    def state(self):
        return self.maps.syncache_state.lookup(0)

    def drop(self, victims):
        """Remove entries [(key, bucket)] through the BPF program; returns
        how many were there to remove."""
        removed = 0
        for i in range(0, len(victims), layout.DROP_BATCH):
            chunk = victims[i : i + layout.DROP_BATCH]
            records = (layout.DropRecord * len(chunk))()
            for r, (key, bucket) in zip(records, chunk):
                r.key = key
                r.bucket = bucket
            _, out, _ = libbpf.test_run(self.drop_fd, bytes(records))
            done = (layout.DropRecord * len(chunk)).from_buffer_copy(out)
            removed += sum(r.removed for r in done)
        return removed

    def due(self, now_ns):
        """(key, entry) of the entries whose retransmission time has come.
        The walk reads rxt_ns straight from the batch buffers and makes
        Python objects only for those: with 100k entries a tick then costs
        milliseconds, not a tenth of a second."""
        if not self.state().entries:
            return []  # the usual case away from floods: one syscall
        size = ctypes.sizeof(layout.SyncacheEntry)
        rxt = struct.Struct(
            "<%dxQ%dx" % (layout.SyncacheEntry.rxt_ns.offset, size - layout.SyncacheEntry.rxt_ns.offset - 8)
        )
        out = []
        for keys, values, n in self.maps.syncache.batches():
            raw = memoryview(values).cast("B")[: n * size]
            for i, (t,) in enumerate(rxt.iter_unpack(raw)):
                if t <= now_ns:
                    out.append((keys[i], values[i]))
        return out

    def tick(self, now_ns=None):
        """syncache_timer: retransmit what is due, expire what has had its
        retransmissions. Returns (retransmitted, stale)."""
        cfg = self.maps.config.lookup(0)
        now_ns = now_ns or time.monotonic_ns()
        base = cfg.rexmt_ms * 1_000_000
        stale = {False: [], True: []}
        resent = {False: 0, True: 0}
        for key, e in self.due(now_ns):
            v6 = bool(key.ipv6)
            if e.rxmits >= cfg.rexmtlimit:
                stale[v6].append((key, e.bucket))
                continue
            if self.sock:
                try:
                    self.sock.send(synack_frame(key, e))
                except OSError as err:
                    log.warning("cannot retransmit a SYN-ACK: %s", err.strerror)
                    continue
            e.rxmits += 1
            e.rxt_ns = now_ns + (base << e.rxmits)
            try:
                self.maps.syncache.update(key, e, flags=2)  # BPF_EXIST: not if expanded meanwhile
            except OSError:
                continue
            resent[v6] += 1
        expired = 0
        for v6 in (False, True):
            gone = self.drop(stale[v6]) if stale[v6] else 0
            self.maps.add_counters(v6, retransmitted=resent[v6], stale=gone)
            expired += gone
        self._log_pause(now_ns)
        return resent[False] + resent[True], expired

    def _log_pause(self, now_ns):
        """One log line per transition of the pause (the seed logs it too)."""
        st = self.state()
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

    def status(self, now_ns=None):
        now_ns = now_ns or time.monotonic_ns()
        st = self.state()
        return {
            "entries": st.entries,
            "paused": st.pause_until_ns > now_ns,
            "pause_remaining_seconds": max(0.0, round((st.pause_until_ns - now_ns) / 1e9, 3)),
            "pause_backoff": st.backoff,
            "pauses": st.pauses,
        }
