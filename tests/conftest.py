"""Shared fixtures. The suite needs root: it makes network namespaces,
loads BPF programs and mounts bpffs where it is missing."""

import os
import secrets
import shutil
import socket
import subprocess

import pytest

from synguard import layout, loader, netns
from synguard.secrets import KeyRotator

PORT = 8080  # protected, with a listener in the unit namespace
PORT_NO_LISTENER = 8081  # protected, nobody listens
PORT_UNPROTECTED = 9090


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def unit_ns():
    """A private network namespace for the unit tests, with a listener on
    PORT: the data path's socket lookups under BPF_PROG_TEST_RUN look in
    the calling thread's namespace (see the dp fixture)."""
    name = "sg-unit-" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        with netns.netns(name):
            listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", PORT))
        listener.listen(64)
        yield name
        listener.close()
    finally:
        subprocess.run(["ip", "netns", "del", name])


@pytest.fixture(scope="session")
def datapath(unit_ns):
    """Both programs compiled once, maps pinned in a private directory."""
    loader.ensure_bpffs()
    pins = os.path.join(layout.PIN_ROOT, "unit-" + secrets.token_hex(3))
    dp = loader.Datapath(pins)
    maps = dp.open_maps()
    try:
        yield dp, maps
    finally:
        maps.close()
        dp.close()
        shutil.rmtree(pins, ignore_errors=True)
        try:
            os.rmdir(layout.PIN_ROOT)
        except OSError:
            pass


UNIT_CONFIG = dict(
    mss4=1460,
    mss6=1440,
    window=65535,
    wscale=7,
    ttl=64,
    flags=layout.CF_WSCALE | layout.CF_SACK | layout.CF_TIMESTAMPS,
    **layout.SETTING_DEFAULTS,
)


def reset(prog, maps, **config):
    """The data path as after attach: config (seed defaults unless given),
    ports, fresh keys, an empty syncache, no pause, no recent hand-offs."""
    maps.config.update(0, layout.Config(**{**UNIT_CONFIG, "synack_rate": 0, **config}).derive())
    maps.set_ports([PORT, PORT_NO_LISTENER])
    KeyRotator(maps.secrets).install_initial()
    for name in (b"handoffs", b"syncache", b"syncache_state", b"syncache_buckets", b"synack_tat"):
        prog.bpf[name].clear()


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
