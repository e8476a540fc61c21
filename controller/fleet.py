"""Fleet mode: hosts behind one address validate each other's cookies.

Every host derives the key of each epoch from a shared master key:

    key(e) = HKDF-SHA256(master, salt="synguard fleet", info="epoch" || e)[:16]
    e      = floor(unix time / period)

so hosts agree without talking to each other. The key of epoch e sits in
the slot of e's parity (the seed's odd/even secrets), so a cookie names its
epoch's parity. A host in epoch e mints with key(e) and, for the other
parity, holds both key(e-1) and key(e+1): a cookie minted by a host whose
clock is up to one period behind or ahead still validates, as long as
|clock skew| + the handshake's duration < one period. Past that it fails,
exactly as an expired key does.

Master key rotation without downtime: the key file may name the next master
key and the epoch from which it is used. Every epoch's key comes from the
master in force for that epoch, so hosts that have the new file switch
together at that epoch, and the keys around the switch (previous, current,
next) are right on every host; the file is read again at every rotation.

The key file must be owned by root, mode 0600 (or stricter), and is never
logged. Its format (TOML):

    key = "<64 hex digits>"           # the master key, 32 bytes
    next_key = "<64 hex digits>"      # optional: the next master key ...
    next_from = 1700000000            # ... used for epochs from this unix time on
"""

import hashlib
import hmac
import os
import stat
import struct

from . import layout
from .configfile import tomllib
from .files import FileError, read_text

KEY_BYTES = 32
SALT = b"synguard fleet"


class FleetKeyError(Exception):
    pass


def hkdf_sha256(master, info, length=16, salt=SALT):
    """RFC 5869 HKDF with SHA-256 (extract, then expand)."""
    prk = hmac.new(salt, master, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def epoch_key(master, epoch):
    return hkdf_sha256(master, b"epoch" + struct.pack(">Q", epoch))


class MasterKeys:
    """The master key in force for each epoch (one, or two during a changeover)."""

    def __init__(self, key, next_key=None, next_from=None):
        self.key, self.next_key, self.next_from = key, next_key, next_from

    def for_epoch(self, epoch, period):
        if self.next_key is not None and epoch * period >= self.next_from:
            return self.next_key
        return self.key

    def key_of(self, epoch, period):
        return epoch_key(self.for_epoch(epoch, period), epoch)


def load(path):
    """The master keys from path; FleetKeyError says why not. Refuses a file
    that anyone but root could read or write."""
    # Kubernetes mounts secrets as symlinks into a ..data directory:
    # read_text follows them, then judges the file itself.
    try:
        text, st = read_text(path, "fleet key", max_bytes=64 * 1024)
    except FileError as e:
        raise FleetKeyError(str(e)) from None
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise FleetKeyError(
            "fleet key %s must be owned by root and mode 0600 (it is %04o, uid %d)"
            % (path, stat.S_IMODE(st.st_mode), st.st_uid)
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise FleetKeyError("fleet key %s is not valid TOML" % path) from None
    unknown = set(data) - {"key", "next_key", "next_from"}
    if unknown:
        raise FleetKeyError("fleet key %s: unknown key %s" % (path, ", ".join(sorted(unknown))))

    def master(name):
        text = data.get(name)
        try:
            raw = bytes.fromhex(text) if isinstance(text, str) else None
        except ValueError:
            raw = None
        if raw is None or len(raw) != KEY_BYTES:
            # the value itself is never repeated in the message
            raise FleetKeyError("fleet key %s: %s must be %d bytes as hex" % (path, name, KEY_BYTES))
        return raw

    key = master("key")
    if ("next_key" in data) != ("next_from" in data):
        raise FleetKeyError("fleet key %s: next_key and next_from go together" % path)
    if "next_key" in data:
        if not isinstance(data["next_from"], int) or isinstance(data["next_from"], bool):
            raise FleetKeyError("fleet key %s: next_from must be a unix time (whole seconds)" % path)
        return MasterKeys(key, master("next_key"), data["next_from"])
    return MasterKeys(key)


def generate():
    """A new master key file's text."""
    return 'key = "%s"\n' % os.urandom(KEY_BYTES).hex()


def key_state(masters, period, now):
    """The secrets map's contents for a host whose clock says `now`:
    (Secrets with the active slot and both slots filled, the epoch)."""
    epoch = int(now // period)

    def k(e):
        k0, k1 = struct.unpack("<QQ", masters.key_of(e, period))
        return layout.Key(k0, k1)

    s = layout.Secrets()
    s.active = epoch & 1
    s.keys[epoch & 1] = k(epoch)
    s.keys[(epoch - 1) & 1] = k(epoch - 1)
    s.ahead = k(epoch + 1)
    s.fleet = 1
    return s, epoch
