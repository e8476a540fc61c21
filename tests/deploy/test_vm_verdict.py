"""vagrant/qemu/verdict.py, boot.sh's verdict on a guest's run, over logs
shaped like the guests' (guest-test.sh's results.txt, a serial console):
a step without its own exit= line fails, and so does a guest whose kernel
reported a soft lockup, whatever the steps that did end said."""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "vagrant", "qemu", "verdict.py")
spec = importlib.util.spec_from_file_location("verdict", SCRIPT)
verdict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verdict)


def block(name, rc, *lines):
    """One step's block as guest-test.sh's run writes it."""
    return "\n== %s: cmd\nexit=%d wall=12s\n-- last 40 lines:\n%s\n" % (name, rc, "\n".join(lines))


HEAD = "kernel: 5.10.0-32-amd64, Debian GNU/Linux 11 (bullseye)\nsteps: attach,demo,e2e, each within 1200 s\n"
LOCKUP = "[  412.133701] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [python3:1234]"
CONSOLE = "[    0.000000] Linux version 5.10.0-32-amd64\r\nVMTEST-BEGIN\r\n"


def test_the_hung_run_that_once_passed_fails_with_the_lockup_line():
    """Issue 26's run: attach ended, demo never did (both CPUs in
    bpf_dispatcher_xdp_func), the guest was stopped at the timeout."""
    results = HEAD + block("attach", 0, "protecting a0 ports 8080")
    console = CONSOLE + "VMTEST-STEP-START demo\r\n" + LOCKUP + "\r\n"
    lines, passed = verdict.verdict("attach,demo,e2e", results, console)
    assert not passed
    assert lines == [
        "attach   PASS (exit=0)",
        "demo     FAIL (no verdict: the step never ended)",
        "e2e      FAIL (no verdict: the step never ended)",
        "guest kernel: " + LOCKUP,
        "FAIL",
    ]


def test_every_step_with_exit_0_and_a_quiet_kernel_passes():
    results = HEAD + block("attach", 0) + block("demo", 0) + block("pytest-xdp", 0, "95 passed in 300s")
    lines, passed = verdict.verdict("attach,demo,xdp", results, CONSOLE)
    assert passed and lines[-1] == "PASS" and lines[2] == "xdp      PASS (exit=0)"


def test_a_lockup_fails_a_run_whose_steps_all_ended_well():
    results = HEAD + block("attach", 0)
    lines, passed = verdict.verdict("attach", results, CONSOLE + LOCKUP + "\r\n")
    assert not passed and lines[0] == "attach   PASS (exit=0)" and lines[1] == "guest kernel: " + LOCKUP


def test_failed_steps_timeouts_and_missing_results_fail():
    results = HEAD + block("attach", 0) + block("demo", 124)  # timeout(1) killed it
    lines, passed = verdict.verdict("attach,demo", results, CONSOLE)
    assert not passed and lines[1] == "demo     FAIL (exit=124)"
    lines, passed = verdict.verdict("attach", None, CONSOLE)
    assert not passed and lines[:2] == [
        "attach   FAIL (no verdict: the step never ended)",
        "the guest wrote no results",
    ]
    # An exit= line before any step's header is no step's verdict.
    lines, passed = verdict.verdict("attach", HEAD + "exit=0\n", CONSOLE)
    assert not passed


def test_kernel_words_in_test_output_are_not_the_kernel():
    """Only printk lines count: a test's own output that says BUG: (a step
    log's tail is on the console too) is judged by its step's exit."""
    results = HEAD + block("attach", 0, "BUG: soft lockup is what issue 26 saw")
    console = CONSOLE + "BUG: soft lockup is what issue 26 saw\r\n"
    assert verdict.verdict("attach", results, console) == (["attach   PASS (exit=0)", "PASS"], True)
    for line in (
        "[ 1201.5] Kernel panic - not syncing: softlockup: hung tasks",
        "[   88.412345] rcu: INFO: rcu_sched self-detected stall on CPU",
        "[   90.000001] BUG: unable to handle page fault for address: ffff",
    ):
        assert verdict.kernel_failure(console + line + "\r\n") == line


def test_the_script_as_boot_sh_calls_it(tmp_path):
    results, console = tmp_path / "results.txt", tmp_path / "serial.log"
    results.write_text(HEAD + block("attach", 0) + block("unit", 0))
    console.write_text(CONSOLE)

    def run(*args):
        return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=30)

    r = run("attach,unit", str(results), str(console))
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "PASS")
    r = run("attach,unit,demo", str(tmp_path / "missing.txt"), str(console))
    assert r.returncode == 1 and "the guest wrote no results" in r.stdout
    assert run("--watch", str(console)).returncode == 0
    console.write_text(CONSOLE + LOCKUP + "\r\n")
    r = run("--watch", str(console))
    assert (r.returncode, r.stdout) == (1, LOCKUP + "\n")
    assert run("--check", "attach,unit,e2e").returncode == 0
    r = run("--check", "attach,bogus")
    assert r.returncode == 2 and r.stderr.startswith("unknown step bogus")
