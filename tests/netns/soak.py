"""Soak: synguard under SYN and bogus-ACK floods at the generator's maximum
for minutes, real clients connecting all the while.

Passes when no real connection fails, the controller's memory stays flat
(its RSS after the first minute grows by less than --rss-slack-mb), and the
counters add up (every XDP frame in exactly one outcome; every hand-off
completed, aborted or raced; the flood's frames all seen). The floods come
from trafgen (netsniff-ng) in the client namespace: spoofed SYNs from
198.19.0.0/16 with random ports and ISNs, and ACKs with random numbers,
bounded in packets and by `timeout`.

usage: sudo python tests/netns/soak.py [--seconds 180] [--rss-slack-mb 8]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from synguard import layout
from synguard.lab import netns
from synguard.lab.testbed import SERVER4, SERVER6, EchoServer, Testbed, trafgen_spoofed

PORT = 8080


def trafgen(bed, kind, count, seconds, tmp):
    conf = os.path.join(tmp, kind + ".cfg")
    trafgen_spoofed(conf, kind, "02:00:00:00:00:02", "02:00:00:00:00:01", SERVER4, PORT)
    # One process (-P 1) in a session of its own: trafgen forks its senders,
    # and the whole group is stopped at the end, not just the parent. -t 1us
    # sends with one sendto per frame: trafgen's TX-ring mode (no gap) stalls
    # to a few thousand frames a second as soon as real clients' TCP leaves
    # the same namespace (seen here, kernel 6.18 veth).
    return netns.popen(
        bed.client_ns,
        [
            "timeout",
            str(seconds),
            "trafgen",
            "--dev",
            bed.client_if,
            "--conf",
            conf,
            "-n",
            str(count),
            "-P",
            "1",
            "-t",
            "1us",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait(30)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--rss-slack-mb", type=float, default=8.0)
    args = ap.parse_args(argv)
    failures = []
    with Testbed() as bed, tempfile.TemporaryDirectory() as tmp:
        srv = EchoServer(bed, PORT)
        ctl = bed.attach([PORT], "--mode", "native", "--no-metrics")
        floods = [
            trafgen(bed, "syn", 400_000_000, args.seconds, tmp),
            trafgen(bed, "ack", 100_000_000, args.seconds, tmp),
        ]
        connects = {"ok": 0, "failed": 0, "times": []}
        done = threading.Event()

        def clients():
            i = 0
            while not done.is_set():
                i += 1
                try:
                    r = bed.connect(SERVER4 if i % 2 else SERVER6, PORT, payload=b"s" * 4000, timeout=5)
                    connects["ok" if r["echo_ok"] else "failed"] += 1
                    connects["times"].append(r["connect_s"])
                except OSError:
                    connects["failed"] += 1
                time.sleep(0.02)

        worker = threading.Thread(target=clients)
        worker.start()
        rss, t0 = [], time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            rss.append((round(time.monotonic() - t0), rss_kb(ctl.pid)))
        for f in floods:
            stop(f)
        done.set()
        worker.join()
        time.sleep(1)
        st = json.loads(bed.synguard_run("status", bed.server_if, "--json").stdout)
        ctl.send_signal(signal.SIGQUIT)  # stop now: no drain
        if ctl.wait(30) != 0:
            failures.append("controller exit code %s" % ctl.returncode)
        srv.close()

    c = st["counters"]
    outcomes = sum(c[k] for k in layout.xdp_outcomes())
    handoffs = c["recvcookie"] + c["expanded"]
    settled = c["completed"] + c["aborted"] + c["raced"]
    after_warmup = [kb for t, kb in rss if t >= 60] or [kb for _, kb in rss]
    growth_mb = (after_warmup[-1] - after_warmup[0]) / 1024
    times = sorted(connects["times"])
    print(
        "soak: %d s, %d frames at XDP (%.0f/s), %d SYN-ACKs sent, %d bogus ACKs refused (%d RSTs), "
        "%d rate-limited"
        % (
            args.seconds,
            c["packets"],
            c["packets"] / args.seconds,
            c["sendcookie"] + c["dupsyn"],
            c["badcookie"],
            c["rstsent"],
            c["ratelimited"],
        )
    )
    print(
        "real clients: %d connected, %d failed; connect median %.2f ms, p99 %.2f ms"
        % (
            connects["ok"],
            connects["failed"],
            1000 * times[len(times) // 2] if times else 0,
            1000 * times[int(len(times) * 0.99)] if times else 0,
        )
    )
    print("controller RSS (s, KiB): %s; growth after the first minute %.1f MB" % (rss, growth_mb))
    print("syncache: %s" % st["syncache"])
    if connects["failed"] or not connects["ok"]:
        failures.append("%d real connections failed" % connects["failed"])
    if growth_mb >= args.rss_slack_mb:
        failures.append("controller RSS grew %.1f MB" % growth_mb)
    if outcomes != c["packets"]:
        failures.append("outcomes %d != packets %d" % (outcomes, c["packets"]))
    if abs(handoffs - settled) > 0:
        failures.append("hand-offs %d != completed+aborted+raced %d" % (handoffs, settled))
    refused = c["rstsent"] + c["rstlimited"] + c["rstheld"]
    if refused != c["badcookie"]:
        failures.append("rstsent + rstlimited + rstheld %d != badcookie %d" % (refused, c["badcookie"]))
    if c["aborted"]:
        failures.append("%d hand-offs aborted" % c["aborted"])
    print("verdict: %s" % ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
