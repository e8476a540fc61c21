"""The controller's footprint: how long `synguard attach` takes until it
protects, and the resident memory of the long-running process afterwards.

On a namespace test bed (a veth, a listener), rounds of: attach natively,
wait for its "protecting" line (the attach time), sample VmRSS of the
controller every 0.5 s for --seconds (steady state: the syncache timer and
key rotation run, /metrics is served), SIGQUIT (stop now).

usage: python bench/footprint.py [--rounds 3] [--seconds 5] [--markdown FILE]
"""

import argparse
import signal
import statistics
import sys
import time

from synguard.lab.testbed import EchoServer, Testbed

PORT = 8080


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for %d" % pid)


def one_round(bed, seconds):
    t0 = time.monotonic()
    proc = bed.attach([PORT], "--mode", "native")  # metrics on the namespace's 127.0.0.1:9717
    attach_s = time.monotonic() - t0
    try:
        samples = []
        for _ in range(int(seconds * 2)):
            time.sleep(0.5)
            samples.append(rss_mb(proc.pid))
    finally:
        proc.send_signal(signal.SIGQUIT)  # stop now: no drain
        proc.wait(30)
    return attach_s, samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--markdown", help="write the results table to this file")
    args = ap.parse_args(argv)
    rows = []
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        try:
            for _ in range(args.rounds):
                rows.append(one_round(bed, args.seconds))
        finally:
            srv.close()
    attach = [a for a, _ in rows]
    steady = [statistics.median(s) for _, s in rows]
    peak = [max(s) for _, s in rows]
    line = "controller RSS steady %.1f MB (rounds %s), peak %.1f MB; attach %.2f s (%.2f-%.2f), %d rounds" % (
        statistics.median(steady),
        ", ".join("%.1f" % s for s in steady),
        max(peak),
        statistics.median(attach),
        min(attach),
        max(attach),
        len(rows),
    )
    print(line)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(
                "| controller | median of %d rounds | range |\n|---|---:|---:|\n"
                "| RSS, steady (MB) | %.1f | %.1f-%.1f |\n"
                "| attach until protecting (s) | %.2f | %.2f-%.2f |\n"
                % (
                    len(rows),
                    statistics.median(steady),
                    min(steady),
                    max(steady),
                    statistics.median(attach),
                    min(attach),
                    max(attach),
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
