#!/usr/bin/env python3
"""The verdict of a guest's test run (boot.sh): one line per step asked for,
then PASS or FAIL.

usage: verdict.py STEPS RESULTS CONSOLE     the verdict; exits 0 on PASS, 1 on FAIL
       verdict.py --watch CONSOLE           the console's first kernel failure line,
                                            exit 1 if there is one (boot.sh polls it)
       verdict.py --check STEPS             exit 2 unless every step is known
  STEPS    the comma list the guest was given (boot.sh --steps)
  RESULTS  the guest's results.txt (it may be missing: the guest wrote none)
  CONSOLE  the serial console's log

A step passes only with its own `exit=0` in RESULTS. A step that has no
verdict there fails (the guest hung, crashed or was stopped before the
step ended), and so does every run whose console shows the guest's kernel
in trouble (a soft lockup, BUG:, an oops, a panic, an RCU stall), whatever
the steps say: a guest that stops answering must not pass.
"""

import re
import sys

# boot.sh's step names and the name each one's block has in results.txt
# (guest-test.sh's run NAME).
STEPS = {
    "attach": "attach",
    "unit": "unit",
    "demo": "demo",
    "e2e": "e2e",
    "xdp": "pytest-xdp",
    "firewall": "pytest-firewall",
    "all": "pytest-all",
}
# Kernel lines (printk's "[ seconds]" prefix, which Debian's kernels print)
# that mean the guest is no longer to be trusted.
KERNEL_FAILURE = re.compile(
    r"^\[\s*\d+\.\d+\]\s.*(BUG: |Kernel panic|Oops: |hard LOCKUP|general protection fault"
    r"|rcu: INFO: \S+ (self-)?detected stall)"
)


def kernel_failure(console):
    """The first kernel failure line of the console's text, or None."""
    for line in console.splitlines():
        line = line.strip("\r\n\0")
        if KERNEL_FAILURE.search(line):
            return line
    return None


def step_exits(results):
    """{results name: exit status} of every step block in results.txt: a
    `== NAME: command` line, then its `exit=N wall=...` line."""
    exits, current = {}, None
    for line in results.splitlines():
        m = re.match(r"^== ([a-z0-9-]+): ", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^exit=(\d+)\b", line)
        if m and current is not None:
            exits[current] = int(m.group(1))
            current = None
    return exits


def verdict(steps, results, console):
    """(lines, passed) for the comma list steps, results.txt's text (None
    when the guest wrote none) and the console's text."""
    lines, passed = [], True
    exits = step_exits(results or "")
    for step in steps.split(","):
        rc = exits.get(STEPS[step])
        if rc is None:
            lines.append("%-8s FAIL (no verdict: the step never ended)" % step)
            passed = False
        else:
            lines.append("%-8s %s (exit=%d)" % (step, "PASS" if rc == 0 else "FAIL", rc))
            passed = passed and rc == 0
    if results is None:
        lines.append("the guest wrote no results")
    failure = kernel_failure(console)
    if failure:
        lines.append("guest kernel: %s" % failure)
        passed = False
    lines.append("PASS" if passed else "FAIL")
    return lines, passed


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def main(argv):
    if len(argv) == 2 and argv[0] == "--watch":
        line = kernel_failure(_read(argv[1]) or "")
        if line:
            print(line)
        return 1 if line else 0
    if len(argv) == 2 and argv[0] == "--check":
        steps = argv[1]
    elif len(argv) == 3 and not argv[0].startswith("-"):
        steps = argv[0]
    else:
        print("usage: verdict.py STEPS RESULTS CONSOLE | --watch CONSOLE | --check STEPS", file=sys.stderr)
        return 2
    bad = [s for s in steps.split(",") if s not in STEPS]
    if bad:
        print("unknown step %s (known: %s)" % (bad[0], ", ".join(STEPS)), file=sys.stderr)
        return 2
    if argv[0] == "--check":
        return 0
    lines, passed = verdict(steps, _read(argv[1]), _read(argv[2]) or "")
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
