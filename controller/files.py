"""Reading a small text file the user named (--config, --fleet-key) without
surprises: a FIFO does not block, a directory, a device, a huge file or a
binary one is refused with a reason before it is parsed, and a dangling
symlink is called one. Every refusal is a FileError whose text names the
file (what it is, e.g. "fleet key", then the path)."""

import errno
import os
import stat

MAX_BYTES = 1 << 20  # a config or key file is a few hundred bytes


class FileError(Exception):
    pass


def read_text(path, what, max_bytes=MAX_BYTES, follow=True):
    """The contents of path as text. what: how the message names it.
    Returns (text, os.stat_result of the opened file)."""
    real = os.path.realpath(path) if follow else path
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once (and the
        # type check below refuses it); it has no effect on a regular file.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise FileError("%s %s is a symlink to %s, which does not exist" % (what, path, real)) from None
        raise FileError("cannot read %s %s: %s" % (what, path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileError("%s %s is a directory" % (what, path))
        if not stat.S_ISREG(st.st_mode):
            raise FileError("%s %s is not a regular file (%s)" % (what, path, _kind(st.st_mode)))
        if st.st_size > max_bytes:
            raise FileError("%s %s is too large (%d bytes; at most %d)" % (what, path, st.st_size, max_bytes))
        try:
            data = os.read(fd, max_bytes + 1)
        except OSError as e:
            raise FileError("cannot read %s %s: %s" % (what, path, e.strerror)) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew since fstat
        raise FileError("%s %s is too large (at most %d bytes)" % (what, path, max_bytes))
    if not data.strip():
        raise FileError("%s %s is empty" % (what, path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(
            "%s %s is not a text file (byte 0x%02x at offset %d is not UTF-8)"
            % (what, path, data[e.start], e.start)
        ) from None
    if "\0" in text:
        raise FileError("%s %s is not a text file (it has NUL bytes)" % (what, path))
    return text, st


def _kind(mode):
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "mode %o" % stat.S_IFMT(mode)
