"""The cookie secrets: two SipHash keys in the `secrets` map, rotated.

As in the seed (sch_secbits_odd/even), cookies are minted with the active
slot and checked against both, so a cookie lives between one and two
rotation periods. A rotation writes a fresh key into the idle slot, which
held the previous key, and only then flips `active` in a second update, so
the data path never mints with a half-written key. Keys come from
os.urandom and exist only in the map and this process's memory: nothing
here formats them into a string.
"""

import os
import struct
import time

from . import layout


class KeyRotator:
    def __init__(self, secrets_map):
        self.map = secrets_map

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

    def rotate(self):
        s = self.map.lookup(0)
        idle = s.active ^ 1
        s.keys[idle] = self._fresh_key()
        self.map.update(0, s)  # the idle slot only: readers mint with `active`
        s.active = idle
        s.rotated_ns = time.monotonic_ns()
        s.rotations += 1
        self.map.update(0, s)

    def info(self):
        """(active slot, seconds since the last rotation, rotations)."""
        s = self.map.lookup(0)
        return s.active, (time.monotonic_ns() - s.rotated_ns) / 1e9, s.rotations
