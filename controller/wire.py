"""Frames out of the interface as they are: the AF_PACKET socket the
syncache timer's SYN-ACKs leave by, a batch of them per system call.

sendmmsg(2) instead of one send() per frame: on the benchmark's machine a
send() of a SYN-ACK costs 2.1 us of CPU and a frame of a 64-frame
sendmmsg 1.3 us (the system call's entry and exit, with the CPU's
mitigations, are most of the difference). The socket goes through the
qdisc like any other (no PACKET_QDISC_BYPASS: the host's shaping and tc
egress filters still see the retransmissions).
"""

import ctypes as ct
import errno
import os
import socket

_libc = ct.CDLL(None, use_errno=True)


class _Iovec(ct.Structure):
    _fields_ = [("base", ct.c_void_p), ("len", ct.c_size_t)]


class _Msghdr(ct.Structure):
    _fields_ = [
        ("name", ct.c_void_p),
        ("namelen", ct.c_uint32),
        ("iov", ct.POINTER(_Iovec)),
        ("iovlen", ct.c_size_t),
        ("control", ct.c_void_p),
        ("controllen", ct.c_size_t),
        ("flags", ct.c_int),
    ]


class _Mmsghdr(ct.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ct.c_uint)]


class PacketSocket:
    """An AF_PACKET socket bound to one interface."""

    def __init__(self, ifname, batch):
        """batch: the most frames one send_batch() takes. Raises
        PermissionError without CAP_NET_RAW, OSError if the interface
        cannot be bound."""
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            self.sock.bind((ifname, 0))
        except OSError:
            self.sock.close()
            raise
        self._iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        for msg, iov in zip(self._msgs, self._iov):
            msg.hdr.iov = ct.pointer(iov)
            msg.hdr.iovlen = 1

    def send_batch(self, frames):
        """frames: (address, length) of each frame, in memory that stays
        valid for the call. Returns {index: strerror} of the frames the
        kernel refused: each is skipped, the ones after it still go. At
        most the batch the socket was made for (sendmmsg would read past
        the headers)."""
        n = len(frames)
        if n > len(self._msgs):
            raise ValueError("%d frames for a batch of %d" % (n, len(self._msgs)))
        for iov, (addr, length) in zip(self._iov, frames):
            iov.base, iov.len = addr, length
        failed, i = {}, 0
        size = ct.sizeof(_Mmsghdr)
        while i < n:
            r = _libc.sendmmsg(self.sock.fileno(), ct.byref(self._msgs, i * size), n - i, 0)
            if r > 0:
                i += r
                continue
            err = ct.get_errno() if r < 0 else errno.EIO  # (0 cannot happen for n > 0)
            if err != errno.EINTR:
                failed[i] = os.strerror(err)  # sendmmsg stops at the frame it fails on
                i += 1
        return failed

    def close(self):
        self.sock.close()
