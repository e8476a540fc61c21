"""Entering network namespaces without leaving the mount namespace.

`ip netns exec` also unshares the mount namespace and remounts /sys, so a
bpffs pin made inside it is invisible to the next `ip netns exec`. synguard
and its test bed switch only the network namespace (setns(CLONE_NEWNET)),
for the calling thread or a child process, and keep the host's bpffs.
"""

import contextlib
import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: %s" % os.strerror(err))


def ns_path(name):
    return os.path.join(NETNS_RUN_DIR, name)


@contextlib.contextmanager
def netns(name):
    """Run the body in network namespace `name` (this thread only). Sockets
    made inside stay in that namespace after the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_path(name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _enter(name):
    def enter():
        fd = os.open(ns_path(name), os.O_RDONLY)
        _setns(fd)
        os.close(fd)

    return enter


def popen(name, argv, **kw):
    """subprocess.Popen of argv inside network namespace `name`."""
    return subprocess.Popen(argv, preexec_fn=_enter(name), **kw)


def run(name, argv, **kw):
    """subprocess.run of argv inside network namespace `name`."""
    return subprocess.run(argv, preexec_fn=_enter(name), **kw)
