"""wire.PacketSocket: a batch of frames out of an interface with sendmmsg,
as they are, a refused frame skipped without losing the ones after it."""

import contextlib
import ctypes
import secrets
import socket

import pytest
from synguard import wire
from synguard.lab import netns

pytestmark = pytest.mark.netns

PACKET_OUTGOING = 4
MTU = 1500


@pytest.fixture
def lo():
    """A namespace of its own whose lo has an Ethernet-sized MTU; the test
    runs inside it."""
    name = "sg-wire-%s" % secrets.token_hex(3)
    netns.create(name)
    try:
        netns.run(name, ["ip", "link", "set", "lo", "mtu", str(MTU)], check=True)
        with netns.netns(name):
            yield name
    finally:
        netns.remove(name)


def frame(tag, size=64):
    """An Ethernet frame (zero MACs, a local experimental EtherType)
    whose payload starts with tag."""
    body = tag + bytes(size - 14 - len(tag))
    return bytes(12) + b"\x88\xb5" + body


def outgoing(rx, expected):
    """The frames rx saw leave lo, until `expected` of them or a quiet 0.5 s."""
    got = []
    rx.settimeout(0.5)
    while len(got) < expected:
        try:
            data, addr = rx.recvfrom(65536)
        except TimeoutError:
            break
        if addr[2] == PACKET_OUTGOING and data[12:14] == b"\x88\xb5":
            got.append(data)
    return got


def send(tx, frames):
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    return tx.send_batch([(ctypes.addressof(b), len(f)) for b, f in zip(bufs, frames)])


@contextlib.contextmanager
def on_lo(batch):
    """(rx: a raw socket that sees the frames leave lo, tx: a PacketSocket
    on lo for batches of up to batch frames)."""
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        rx.bind(("lo", 0))
        tx = wire.PacketSocket("lo", batch)
        try:
            yield rx, tx
        finally:
            tx.close()
    finally:
        rx.close()


def test_a_batch_leaves_as_it_is_in_order(lo):
    with on_lo(64) as (rx, tx):
        frames = [frame(b"frame %d" % i, 60 + i) for i in range(64)]
        assert send(tx, frames) == {}
        assert outgoing(rx, 64) == frames
        # the buffers are reused: a shorter batch after a full one
        assert send(tx, frames[:2]) == {}
        assert outgoing(rx, 2) == frames[:2]


def test_a_refused_frame_is_reported_and_the_rest_still_go(lo):
    with on_lo(8) as (rx, tx):
        long = MTU + 100
        frames = [frame(b"a"), frame(b"too long", long), frame(b"b"), frame(b"c", long), frame(b"d")]
        failed = send(tx, frames)
        assert sorted(failed) == [1, 3]
        assert set(failed.values()) == {"Message too long"}
        assert outgoing(rx, 3) == [frames[0], frames[2], frames[4]]


def test_more_frames_than_the_batch_are_refused_before_any_goes(lo):
    with on_lo(2) as (rx, tx):
        with pytest.raises(ValueError, match="3 frames for a batch of 2"):
            send(tx, [frame(b"x")] * 3)
        assert outgoing(rx, 1) == []


def test_an_interface_that_does_not_exist_is_an_oserror(lo):
    with pytest.raises(OSError):
        wire.PacketSocket("sg-nosuch0", 8)
