"""The test suite by kind: unit/ (no test bed: packet codecs, the
firewall check, config files, the CLI, and the data path through
BPF_PROG_TEST_RUN in one shared namespace), netns/ (synguard attached in
network namespaces with real kernel TCP, the e2e suite, the soak),
deploy/ (the deploy files, the Debian package).

Shared fixtures (the set-up itself is synguard.lab.support's, shared
with the benchmarks): the data path's, used by unit/ and deploy/. Most
of the suite needs root: it makes network namespaces, loads BPF programs
and mounts bpffs where it is missing. Those tests carry the marker
`root` and are skipped without it; the rest (packet codecs, the firewall
walker, config files, deploy files) run as anyone."""

import os
import signal

import pytest
from synguard.lab import netns, support

PORT = support.PORT  # protected, with a listener in the unit namespace
PORT_NO_LISTENER = 8081  # protected, nobody listens
PORT_UNPROTECTED = 9090


def _stopped(signum, frame):
    raise KeyboardInterrupt


# A run stopped with SIGTERM (a CI timeout, kill) unwinds as Ctrl-C does:
# the fixtures' teardown removes the namespaces, XDP programs and pins it
# made. Killed outright, a run left a pinned data path and a namespace.
signal.signal(signal.SIGTERM, _stopped)


# What only root can do: enter namespaces, load BPF, mount bpffs. A test
# that uses the unit namespace needs it by that alone.
ROOT_FIXTURES = {"unit_ns"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("netns") or ROOT_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.root)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if item.get_closest_marker("root"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def unit_ns():
    """A private network namespace for the unit tests, with a listener on
    PORT: the data path's socket lookups under BPF_PROG_TEST_RUN look in
    the calling thread's namespace (see the dp fixture)."""
    with support.listening_namespace("sg-unit") as name:
        yield name


@pytest.fixture(scope="session")
def datapath(unit_ns):
    """The programs compiled once, maps pinned in a private directory."""
    with support.compiled("unit") as (dp, maps):
        yield dp, maps


def reset(prog, maps, **config):
    """The data path as after attach: config (seed defaults unless given,
    no reflection limit), ports, fresh keys, nothing left from before."""
    support.configure(prog, maps, (PORT, PORT_NO_LISTENER), **{"synack_rate": 0, **config})


@pytest.fixture
def dp(datapath, unit_ns):
    """The data path reset for one test, the test running inside the unit
    namespace."""
    prog, maps = datapath
    reset(prog, maps)
    with netns.netns(unit_ns):
        yield prog, maps


@pytest.fixture
def cookies_only(datapath, unit_ns):
    """As dp, with syncookies_only=1: the pure cookie path, no entries, so a
    test may send the same SYN again and get a fresh cookie."""
    prog, maps = datapath
    reset(prog, maps, syncookies_only=1)
    with netns.netns(unit_ns):
        yield prog, maps
