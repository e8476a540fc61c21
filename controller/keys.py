"""The cookie secrets: SipHash keys in the `secrets` map, rotated.

As in the seed (sch_secbits_odd/even), cookies are minted with the active
slot and checked against both, so a cookie lives between one and two
rotation periods. A rotation writes the new key into the idle slot, which
held the previous key, and only then flips `active` in a second update, so
the data path never mints with a half-written key.

Two sources of keys: KeyRotator draws each from os.urandom (one host);
FleetRotator derives them from a master key shared by a fleet
(controller/fleet.py). Keys exist only in the map and this process's
memory: nothing here formats them into a string.
"""

import logging
import os
import struct
import time

from . import fleet, layout

log = logging.getLogger("synguard")


# Why a rotation cannot be asked for (`synguard rotate`, SIGUSR1), by key
# source; the CLI and the controller both say these.
KERNEL_OWN = "the kernel's cookie secret is its own: nothing to rotate"
FLEET_OWN = (
    "its keys come from the fleet's master key (change it with next_key in the key file), not from here"
)


def source_for(cookies, period, fleet_key=""):
    """The key source of a data path: a callable that takes its secrets map
    and returns a KeyRotator, FleetRotator or KernelCookies."""
    if cookies == "kernel":
        return lambda secrets_map: KernelCookies(secrets_map, period)
    if fleet_key:
        return lambda secrets_map: FleetRotator(secrets_map, period, fleet_key)
    return lambda secrets_map: KeyRotator(secrets_map, period)


def rotation_refused(cookies, fleet):
    """Why a rotation on request is refused for a data path in cookie mode
    cookies whose secrets map says fleet; None if it is not."""
    if cookies == "kernel":
        return KERNEL_OWN
    return FLEET_OWN if fleet else None


class KeyRotator:
    """Random keys, rotated every period seconds after the last rotation
    the map records (a controller that takes over keeps the schedule; a
    schedule missed while no controller ran rotates at once)."""

    refused = None

    def __init__(self, secrets_map, period=16.0):
        self.map = secrets_map
        self.period = period
        self.reschedule(period)

    def reschedule(self, period):
        """A new period, counted from the last rotation."""
        self.period = period
        last = self.map.lookup(0).rotated_ns / 1e9 or time.monotonic()
        self._next = last + period

    @staticmethod
    def _fresh_key():
        k0, k1 = struct.unpack("<QQ", os.urandom(16))
        return layout.Key(k0, k1)

    def install_initial(self):
        s = layout.Secrets()
        s.keys[0] = self._fresh_key()
        s.keys[1] = self._fresh_key()
        s.active = 0
        s.rotated_ns = time.monotonic_ns()
        self.map.update(0, s)

    def due_in(self):
        return self._next - time.monotonic()

    def rotate(self):
        s = self.map.lookup(0)
        idle = s.active ^ 1
        s.keys[idle] = self._fresh_key()
        self.map.update(0, s)  # the idle slot only: readers mint with `active`
        s.active = idle
        s.rotated_ns = time.monotonic_ns()
        s.rotations += 1
        self.map.update(0, s)
        # On time: keep the cadence. Late (no controller ran for a while):
        # one rotation now and the next a full period later, never two at
        # once, which would void the cookies minted meanwhile.
        self._next += self.period
        if self._next < time.monotonic():
            self._next = time.monotonic() + self.period

    def rotate_now(self):
        """Rotate off schedule (`synguard rotate`); the new key then lives a
        full period, as one rotated on time does."""
        self.rotate()
        self._next = time.monotonic() + self.period


class KernelCookies:
    """Kernel-cookie mode: the kernel's cookie secret is its own, made at
    boot, and its cookies carry a minute counter: nothing to install or
    rotate. The controller's loop still wakes every period for its checks
    (our programs still attached, the firewall)."""

    refused = KERNEL_OWN

    def __init__(self, secrets_map, period=16.0):
        self.period = period
        self._next = time.monotonic() + period

    def install_initial(self):
        pass

    def due_in(self):
        return self._next - time.monotonic()

    def rotate(self):
        self._next += self.period


class FleetRotator:
    """Keys derived from the fleet's master key, one per wall-clock epoch of
    period seconds; every host of the fleet holds the same ones. The key file
    is read again at each rotation, so a new file (a master key changeover)
    takes effect without a restart; a file that cannot be read then is
    logged and the keys already derived are kept."""

    refused = FLEET_OWN

    def __init__(self, secrets_map, period, key_path, clock=time.time):
        self.map = secrets_map
        self.period = period
        self.key_path = key_path
        self.clock = clock
        self.masters = fleet.load(key_path)  # FleetKeyError at attach: refused

    def _write(self, epoch_state):
        new, _epoch = epoch_state
        s = self.map.lookup(0)
        new.rotations = s.rotations + (s.active != new.active or not s.fleet)
        staged = layout.Secrets.from_buffer_copy(new)
        staged.active = s.active if s.fleet else new.active  # first the keys, then the flip
        staged.ahead = s.ahead if s.fleet else new.ahead
        staged.rotated_ns = s.rotated_ns
        self.map.update(0, staged)
        new.rotated_ns = time.monotonic_ns()
        self.map.update(0, new)

    def install_initial(self):
        self._write(fleet.key_state(self.masters, self.period, self.clock()))

    def due_in(self):
        return self.period - self.clock() % self.period

    def rotate(self):
        try:
            self.masters = fleet.load(self.key_path)
        except fleet.FleetKeyError as e:
            log.error("%s; keeping the master key read before", e)
        self._write(fleet.key_state(self.masters, self.period, self.clock()))
