"""synguard demo: the whole thing on one machine, in two namespaces.

Builds the test bed (controller/testbed.py), starts a real listener,
attaches synguard in native XDP mode, runs real clients, then a bounded
flood of spoofed SYNs and forged ACKs with real clients connecting during
it, prints the counters and a one-line verdict, and removes everything.

usage: python -m synguard.demo [--syns N] [--acks N] [--clients N] [--seconds S] [--cookies MODE]
"""

import argparse
import json
import signal
import statistics
import sys
import threading
import time
import urllib.request

from . import netns
from .e2e import add_cookies_option
from .testbed import SERVER4, SERVER6, EchoServer, Testbed, forged_acks, spoofed_syns

PORT = 8080


def connect_many(bed, n, payload_size=10000):
    """n real connections, v4 and v6 alternating: (ok, connect times)."""
    ok, times = 0, []
    for i in range(n):
        try:
            r = bed.connect(SERVER4 if i % 2 == 0 else SERVER6, PORT, payload=b"d" * payload_size)
        except OSError:
            continue
        ok += r["echo_ok"]
        times.append(r["connect_s"])
    return ok, times


def main(argv=None):
    ap = argparse.ArgumentParser(prog="synguard-demo", description=__doc__.split("\n\n")[1])
    ap.add_argument("--syns", type=int, default=50000, help="spoofed SYNs in the flood (default 50000)")
    ap.add_argument("--acks", type=int, default=10000, help="forged ACKs in the flood (default 10000)")
    ap.add_argument(
        "--clients", type=int, default=100, help="real connections before the flood (default 100)"
    )
    ap.add_argument("--seconds", type=float, default=20, help="upper bound on the flood's duration")
    add_cookies_option(ap)
    args = ap.parse_args(argv)

    print("synguard demo: namespace test bed, real listener, real clients, bounded flood")
    with Testbed() as bed:
        print(
            "1. test bed: %s (198.18.0.1, 2001:db8::1) <-veth-> %s (%s, %s)"
            % (bed.client_ns, bed.server_ns, SERVER4, SERVER6)
        )
        srv = EchoServer(bed, PORT)
        print("2. listener: [::]:%d in %s, echoing" % (PORT, bed.server_ns))
        t0 = time.monotonic()
        proc = bed.attach([PORT], "--mode", "native", "--cookies", args.cookies)
        cookies = json.loads(bed.synguard_run("status", bed.server_if, "--json").stdout)["cookies"]
        print(
            "3. synguard attach %s --ports %d --mode native: %s cookies (%.1f s to compile, load and attach)"
            % (bed.server_if, PORT, cookies, time.monotonic() - t0)
        )
        try:
            t0 = time.monotonic()
            ok_before, times = connect_many(bed, args.clients)
            elapsed = time.monotonic() - t0
            print(
                "4. %d/%d real connections (v4 and v6, 10 KB each way): %.0f connections/s, "
                "median connect %.2f ms"
                % (
                    ok_before,
                    args.clients,
                    args.clients / elapsed,
                    statistics.median(times) * 1000 if times else 0,
                )
            )

            frames = list(spoofed_syns(args.syns * 4 // 5, PORT)) + list(
                spoofed_syns(args.syns // 5, PORT, v6=True)
            )
            frames += list(forged_acks(args.acks, PORT))
            sent = []
            flood = threading.Thread(target=lambda: sent.append(bed.flood(frames, args.seconds)))
            accepted_before = len(srv.accepted)
            t0 = time.monotonic()
            flood.start()
            during = []
            while flood.is_alive():
                during.append(connect_many(bed, 1))
            flood.join()
            flood_s = time.monotonic() - t0
            ok_during = sum(ok for ok, _ in during)
            print(
                "5. flood: %d frames (%d spoofed SYNs, %d forged ACKs from 198.19.0.0/16, 2001:db8:5::/48) "
                "in %.1f s, %d/%d real connections during it"
                % (
                    sent[0],
                    min(sent[0], len(frames) - args.acks),
                    max(0, sent[0] - (len(frames) - args.acks)),
                    flood_s,
                    ok_during,
                    len(during),
                )
            )
            time.sleep(0.5)
            st = json.loads(bed.synguard_run("status", bed.server_if, "--json").stdout)
            c = st["counters"]
            sc = st["syncache"]
            print(
                "6. syncache: %d entries, %s (%d pauses); counters (synguard status %s):"
                % (
                    sc["entries"],
                    "paused for %.1f s more" % sc["pause_remaining_seconds"] if sc["paused"] else "active",
                    sc["pauses"],
                    bed.server_if,
                )
            )
            width = max(map(len, c))
            for name, value in c.items():
                print("     %-*s %d" % (width, name, value))
            with netns.netns(bed.server_ns):
                metrics = urllib.request.urlopen("http://127.0.0.1:9717/metrics", timeout=5).read().decode()
            samples = [
                line
                for line in metrics.splitlines()
                if line.startswith("synguard_") and "_created" not in line
            ]
            print(
                "   /metrics (in the server namespace): %d synguard samples, e.g. %s"
                % (len(samples), next(s for s in samples if s.startswith("synguard_sendcookie_total")))
            )

            real_total = args.clients + len(during)
            real_ok = ok_before + ok_during
            syns_sent = min(sent[0], len(frames) - args.acks)
            acks_sent = max(0, sent[0] - syns_sent)
            forged_accepted = len(srv.accepted) - accepted_before - ok_during
            answered = c["sendcookie"] - real_total
            # synguard's cookies: tc made each socket; the kernel's: its own
            # cookie check did, from the ACKs XDP let through.
            made = c["completed"] if cookies == "synguard" else c["recvcookie"] + c["expanded"]
            good = (
                real_ok == real_total
                and answered + c["ratelimited"] == syns_sent
                and made == real_total
                and c["badcookie"] == acks_sent
                and c["rstsent"] + c["rstlimited"] + c["rstheld"] == c["badcookie"]
                and forged_accepted == 0
            )
            print(
                "verdict: %s: %d/%d real connections completed (%d during the flood), %d/%d spoofed SYNs "
                "answered at XDP with cookie SYN-ACKs (%d held back by the reflection limit), "
                "%d/%d forged ACKs refused at XDP (%d answered with an RST within the budget, %d dropped), "
                "%d accepted by the listener"
                % (
                    "PASS" if good else "FAIL",
                    real_ok,
                    real_total,
                    ok_during,
                    answered,
                    syns_sent,
                    c["ratelimited"],
                    c["badcookie"],
                    acks_sent,
                    c["rstsent"],
                    c["rstlimited"],
                    forged_accepted,
                )
            )
        finally:
            # At once: SIGTERM (systemctl stop) would first drain for up to
            # two key periods, 32 s, so that handshakes in flight complete.
            proc.send_signal(signal.SIGQUIT)
            rc = proc.wait(30)
            srv.close()
            print(
                "7. SIGQUIT (stop now; SIGTERM drains first): synguard exited %d (%s); removing the test bed"
                % (rc, proc.stdout.read().strip())
            )
    return 0 if good and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
