"""CPU cost of the syncache timer (controller/syncache.py driving
bpf/syncache_timer.c) over 100k entries.

The entries are made the real way: 100k SYNs of distinct 4-tuples through
the XDP program (BPF_PROG_TEST_RUN). Then, on a simulated clock:
  idle          one tick before any entry can be due (the common case: it
                reads the syncache's state and the config, no entry)
  scan          one tick when nothing is due but the timer must look
  retransmit    one tick when every entry is due: 100k SYN-ACKs copied from
                the entries and sent (AF_PACKET on the namespace's
                loopback), entries rescheduled
  expire        one tick when every entry has had its retransmissions: 100k
                removals
  flush         one tick while the syncache is paused: 100k removals
  scrape        one /metrics rendering (the collector reads counters and
                the syncache's entry count, never the entries), with the
                syncache full; the median of 200
CPU is user + system time of this process (getrusage), wall time alongside;
the kernel's work in the timer program counts as this process's system
time.

usage: python bench/syncache_timer.py [--entries 100000] [--markdown FILE]
"""

import argparse
import resource
import statistics
import sys
import time
import types

from common import configure, datapath, syns
from prometheus_client import CollectorRegistry, generate_latest
from synguard import layout, libbpf, wire
from synguard.metrics import SynguardCollector
from synguard.runstate import RunState
from synguard.syncache import Syncache


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    c0, t0 = cpu(), time.monotonic()
    out = fn()
    return cpu() - c0, time.monotonic() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100000)
    ap.add_argument("--markdown", help="write the results table to this file")
    args = ap.parse_args(argv)
    n = args.entries
    rows = []
    with datapath(layout.syncache_map_size(n)) as (dp, maps, _ns):
        configure(dp, maps, cachelimit=n, bucketlimit=n, pause_ms=0)
        for frame in syns(n):
            libbpf.test_run(dp.xdp_fd, frame)
        entries = maps.syncache_state.lookup(0).entries
        assert entries == n, entries
        timer = Syncache(maps, dp.timer_fd)
        timer.wire = wire.PacketSocket("lo", layout.TIMER_BATCH)
        first_due = min(e.rxt_ns for _, e in timer.entries())
        last_due = max(e.rxt_ns for _, e in timer.entries())

        c, w, (resent, stale) = timed(lambda: timer.tick(first_due - 1))
        assert (resent, stale) == (0, 0)
        rows.append(("scan, nothing due", c, w))
        c, w, (resent, stale) = timed(lambda: timer.tick(first_due - 1))
        assert (resent, stale) == (0, 0)
        rows.append(("idle: no entry can be due", c, w))
        registry = CollectorRegistry()
        collector = SynguardCollector()
        collector.attached = types.SimpleNamespace(
            maps=maps, state=RunState("lo", 1, 1, 0, "native", [8080], 60.0)
        )
        registry.register(collector)
        scrapes = [timed(lambda: generate_latest(registry)) for _ in range(200)]
        assert b'synguard_syncache_entries{interface="lo"} %d.0' % n in scrapes[0][2]
        scrape = (statistics.median(s[0] for s in scrapes), statistics.median(s[1] for s in scrapes))
        c, w, (resent, stale) = timed(lambda: timer.tick(last_due))
        assert (resent, stale) == (n, 0), (resent, stale)
        rows.append(("retransmit all (%d SYN-ACKs sent)" % resent, c, w))
        for e_key, e in timer.entries():  # as if the retransmissions had run out
            e.rxmits = maps.config.lookup(0).rexmtlimit
            maps.syncache.update(e_key, e)
        c, w, (resent, stale) = timed(lambda: timer.tick(last_due + (60 << 30)))
        assert (resent, stale) == (0, n), (resent, stale)
        rows.append(("expire all (%d removed)" % stale, c, w))
        assert maps.syncache_state.lookup(0).entries == 0

        configure(dp, maps, cachelimit=n, bucketlimit=n, pause_ms=0)
        for frame in syns(n):
            libbpf.test_run(dp.xdp_fd, frame)
        st = maps.syncache_state.lookup(0)
        st.pause_until_ns = time.monotonic_ns() + (60 << 30)  # as after an overflow
        maps.syncache_state.update(0, st)
        c, w, (resent, flushed) = timed(lambda: timer.tick())
        assert (resent, flushed) == (0, n), (resent, flushed)
        rows.append(("flush all while paused (%d removed)" % flushed, c, w))
        timer.wire.close()

    print(
        "/metrics scrape with %d entries: CPU %.2f ms, wall %.2f ms (median of 200)"
        % (n, scrape[0] * 1e3, scrape[1] * 1e3)
    )
    for name, c, w in rows:
        print("%-36s CPU %6.3f s   wall %6.3f s   (%.2f us CPU per entry)" % (name, c, w, c / n * 1e6))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| tick over %d entries | CPU s | wall s | CPU per entry |\n|---|---:|---:|---:|\n" % n)
            for name, c, w in rows:
                f.write("| %s | %.3f | %.3f | %.2f us |\n" % (name, c, w, c / n * 1e6))
            f.write(
                "\nOne /metrics scrape with the %d entries in the syncache: %.2f ms CPU, %.2f ms wall "
                "(median of 200).\n" % (n, scrape[0] * 1e3, scrape[1] * 1e3)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
