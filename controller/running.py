"""A running controller, from another process: whether it handles a
signal, asking it to stop (and hearing about its drain), waiting for it
to be gone. Used by `synguard detach` and `rotate`; the lock that says it
runs is runstate's.
"""

import os
import signal
import time

from .runstate import RunState


class Elsewhere(Exception):
    """The controller runs in another PID namespace: it cannot be signalled
    from here."""


def stop_controller(state, now=False, said=lambda line: None):
    """Ask a running controller to stop (SIGTERM: it drains first; SIGQUIT
    when now: at once) and wait until it lets go of the interface. said(line)
    hears about the drain. True if it stopped."""
    if not state.same_pid_ns():
        raise Elsewhere(
            "the controller of %s runs in another PID namespace (a container?): stop it there" % state.ifname
        )
    try:
        os.kill(state.pid, signal.SIGQUIT if now and catches(state.pid, signal.SIGQUIT) else signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + (5.0 if now else DRAIN_WAIT_SECONDS)
    told = now
    while time.monotonic() < deadline:
        if not state.controller_alive():
            return True
        if not told:
            st = RunState.load(state.ifname)
            if st and st.phase == "draining":
                said(
                    "draining: new SYNs go to the kernel; handshakes synguard answered complete for "
                    "%.0f s more (detach --now skips this)" % max(0.0, st.drain_until - time.time())
                )
                told = True
        time.sleep(0.05)
    return False


# The longest a stop can take: the drain (daemon.DRAIN_MAX_SECONDS) and a margin.
DRAIN_WAIT_SECONDS = 75.0


def catches(pid, signum):
    """Whether process pid has a handler for signum (/proc/PID/status SigCgt):
    a controller from before a signal was handled would die of it."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def wait_exited(pid, timeout=10.0):
    """The controller drops its lock before it has finished detaching: wait
    until the process is gone (or a zombie), so that what it removed can be
    told and nothing is removed twice at once. True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            return True
        time.sleep(0.02)
    return False
