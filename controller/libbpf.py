"""The few bpf() calls synguard needs, through libbpf and ctypes.

libbpf comes with bcc on Debian and Ubuntu (bcc links it), so this adds no
dependency: libbpf.so.1, or libbpf.so.0 (0.3 on Debian 11, 0.5 on Ubuntu
22.04), which has every symbol used here but prog_load's. It gives us what
bcc's Python side lacks and netlink cannot do: pinning and opening pinned
objects from another process, map access, BPF_PROG_TEST_RUN and object
info. Every wrapper raises OSError with the errno on failure.
"""

import ctypes as ct
import errno
import os
import struct


def _open():
    try:
        return ct.CDLL("libbpf.so.1", use_errno=True), 1
    except OSError:
        return ct.CDLL("libbpf.so.0", use_errno=True), 0


_lib, LIBBPF_MAJOR = _open()
# libbpf would print the kernel's extack messages to stderr on expected
# misses (querying a hook that is not there); errors reach us as errno.
_lib.libbpf_set_print(None)

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3
ENOTSUPP = 524  # the kernel's own "operation not supported", not in errno


def _errno(ret):
    """The errno of a failed call: libbpf 1.x returns -errno, 0.x returns
    -1 and sets errno (1.x sets it too, but -1 there is EPERM)."""
    return -ret if ret != -1 else ct.get_errno()


def _check(ret, what):
    if ret < 0:
        err = _errno(ret)
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


class _TestRunOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


class _ProgLoadOpts(ct.Structure):  # struct bpf_prog_load_opts, libbpf 1.1
    _fields_ = [
        ("sz", ct.c_size_t),
        ("attempts", ct.c_int),
        ("expected_attach_type", ct.c_int),
        ("prog_btf_fd", ct.c_uint32),
        ("prog_flags", ct.c_uint32),
        ("prog_ifindex", ct.c_uint32),
        ("kern_version", ct.c_uint32),
        ("attach_btf_id", ct.c_uint32),
        ("attach_prog_fd", ct.c_uint32),
        ("attach_btf_obj_fd", ct.c_uint32),
        ("fd_array", ct.POINTER(ct.c_int)),
        ("func_info", ct.c_void_p),
        ("func_info_cnt", ct.c_uint32),
        ("func_info_rec_size", ct.c_uint32),
        ("line_info", ct.c_void_p),
        ("line_info_cnt", ct.c_uint32),
        ("line_info_rec_size", ct.c_uint32),
        ("log_level", ct.c_uint32),
        ("log_size", ct.c_uint32),
        ("log_buf", ct.c_char_p),
    ]


def _opts(cls, **kw):
    o = cls(**kw)
    o.sz = ct.sizeof(cls)
    return o


_lib.bpf_obj_get.argtypes = [ct.c_char_p]
_lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
_lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
_lib.bpf_map_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
_lib.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
_lib.bpf_map_lookup_batch.argtypes = [
    ct.c_int,
    ct.c_void_p,
    ct.c_void_p,
    ct.c_void_p,
    ct.c_void_p,
    ct.POINTER(ct.c_uint32),
    ct.c_void_p,
]
_lib.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(_TestRunOpts)]
_lib.bpf_prog_get_fd_by_id.argtypes = [ct.c_uint32]
_lib.bpf_btf_get_next_id.argtypes = [ct.c_uint32, ct.POINTER(ct.c_uint32)]
_lib.bpf_btf_get_fd_by_id.argtypes = [ct.c_uint32]
_lib.bpf_prog_load.argtypes = [
    ct.c_int,
    ct.c_char_p,
    ct.c_char_p,
    ct.c_void_p,
    ct.c_size_t,
    ct.POINTER(_ProgLoadOpts),
]
_lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]


def obj_pin(fd, path):
    _check(_lib.bpf_obj_pin(fd, path.encode()), "pin " + path)


def obj_get(path):
    """A new fd for the object (map or program) pinned at path."""
    return _check(_lib.bpf_obj_get(path.encode()), "open " + path)


def num_possible_cpus():
    return _check(_lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def _info(fd, size=256):
    """The kernel's bpf_*_info struct for the object behind fd, as bytes."""
    info = ct.create_string_buffer(size)
    n = ct.c_uint32(size)
    _check(_lib.bpf_obj_get_info_by_fd(fd, info, ct.byref(n)), "object info")
    return info.raw


def prog_id(fd):
    """The id of the program behind fd (bpf_prog_info.id); needs no
    CAP_SYS_ADMIN, unlike opening a program by id."""
    return int.from_bytes(_info(fd)[4:8], "little")


def pinned_prog_id(path):
    """The id of the program pinned at path, 0 if there is none."""
    try:
        fd = obj_get(path)
    except OSError:
        return 0
    try:
        return prog_id(fd)
    finally:
        os.close(fd)


def map_info(path):
    """(type, key_size, value_size, max_entries, map_flags) of the map
    pinned at path (struct bpf_map_info)."""
    fd = obj_get(path)
    try:
        kind, _id, key_size, value_size, max_entries, flags = struct.unpack_from("<6I", _info(fd, 80))
    finally:
        os.close(fd)
    return kind, key_size, value_size, max_entries, flags


class PinnedMap:
    """A map opened from its bpffs pin, read and written with ctypes values.
    The pinned map's key and value sizes must be the types' (a map made by
    other sources is refused, not misread)."""

    def __init__(self, path, key_type, value_type, percpu=False):
        self.path = path
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        self._no_batch = False  # set when the kernel refuses batch lookups here
        self.fd = obj_get(path)
        # struct bpf_map_info: type, id, key_size, value_size, max_entries.
        key_size, value_size, self.max_entries = struct.unpack_from("<III", _info(self.fd, 80), 8)
        if (key_size, value_size) != (ct.sizeof(key_type), ct.sizeof(value_type)):
            os.close(self.fd)
            self.fd = -1
            raise OSError(
                errno.EPROTO,
                "%s has %d-byte keys and %d-byte values, not %d and %d"
                % (path, key_size, value_size, ct.sizeof(key_type), ct.sizeof(value_type)),
            )

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def lookup(self, key):
        k = key if isinstance(key, self.key_type) else self.key_type(key)
        if self.percpu:
            # The kernel rounds each CPU's value up to 8 bytes.
            stride = (ct.sizeof(self.value_type) + 7) & ~7
            ncpu = num_possible_cpus()
            buf = ct.create_string_buffer(stride * ncpu)
            _check(_lib.bpf_map_lookup_elem(self.fd, ct.byref(k), buf), "lookup " + self.path)
            return [self.value_type.from_buffer_copy(buf, i * stride) for i in range(ncpu)]
        v = self.value_type()
        _check(_lib.bpf_map_lookup_elem(self.fd, ct.byref(k), ct.byref(v)), "lookup " + self.path)
        return v

    def update(self, key, value, flags=0):
        """flags: BPF_ANY (0), BPF_NOEXIST (1), BPF_EXIST (2)."""
        k = key if isinstance(key, self.key_type) else self.key_type(key)
        _check(_lib.bpf_map_update_elem(self.fd, ct.byref(k), ct.byref(value), flags), "update " + self.path)

    def batches(self, chunk=4096):
        """Yield (keys array, values array, count) chunks of the whole map,
        read with BPF_MAP_LOOKUP_BATCH (one syscall per chunk instead of two
        per entry). Each chunk has buffers of its own."""
        token = ct.create_string_buffer(max(8, ct.sizeof(self.key_type)))
        value_type = self.value_type
        if self.percpu:  # one value per possible CPU, each padded to 8 bytes
            assert ct.sizeof(value_type) == 8
            value_type = value_type * num_possible_cpus()
        first = True
        while not self._no_batch:
            keys = (self.key_type * chunk)()
            values = (value_type * chunk)()
            count = ct.c_uint32(chunk)
            ret = _lib.bpf_map_lookup_batch(
                self.fd, None if first else token, token, keys, values, ct.byref(count), None
            )
            err = _errno(ret) if ret < 0 else 0
            if first and err == ENOTSUPP:
                # No batch operations on per-CPU arrays (Linux 5.10 has none).
                self._no_batch = True
                break
            if err and err != errno.ENOENT:
                _check(ret, "lookup batch " + self.path)
            if count.value:
                yield keys, values, count.value
            if err == errno.ENOENT:
                return
            first = False
        yield from self._batches_by_key(chunk, value_type)

    def _batches_by_key(self, chunk, value_type):
        """batches() for kernels without batch lookups on this map: two
        syscalls per entry (next key, lookup)."""
        keys = (self.key_type * chunk)()
        values = (value_type * chunk)()
        key, n = None, 0
        while True:
            nxt = self.key_type()
            ret = _lib.bpf_map_get_next_key(self.fd, None if key is None else ct.byref(key), ct.byref(nxt))
            if ret < 0 and _errno(ret) == errno.ENOENT:
                break
            _check(ret, "next key " + self.path)
            slot = ct.byref(values, n * ct.sizeof(value_type))
            ret = _lib.bpf_map_lookup_elem(self.fd, ct.byref(nxt), slot)
            if ret < 0 and _errno(ret) != errno.ENOENT:  # removed meanwhile: skipped
                _check(ret, "lookup " + self.path)
            if ret >= 0:
                keys[n] = nxt
                n += 1
            key = nxt
            if n == chunk:
                yield keys, values, n
                keys, values, n = (self.key_type * chunk)(), (value_type * chunk)(), 0
        if n:
            yield keys, values, n

    def items(self):
        """All (key, value) pairs (views into the batch buffers)."""
        return [kv for keys, values, n in self.batches() for kv in zip(keys[:n], values[:n])]


class TestRun:
    """BPF_PROG_TEST_RUN of one program on one frame, buffers made once so
    that a timing loop allocates nothing. run() returns (verdict, ns); the
    ns is the kernel's own measurement of the run (bpf_test_timer)."""

    def __init__(self, prog_fd, frame, repeat=1, out_size=4096, ctx=None, in_size=0):
        """ctx: the program's context in (struct __sk_buff's first bytes
        for tc programs), else none. in_size: room for longer frames
        given later to feed()."""
        self.prog_fd = prog_fd
        self._in = ct.create_string_buffer(bytes(frame), max(len(frame), in_size))
        self._out = ct.create_string_buffer(out_size)
        self._out_size = out_size
        self.opts = _opts(
            _TestRunOpts,
            data_in=ct.cast(self._in, ct.c_void_p),
            data_size_in=len(frame),
            data_out=ct.cast(self._out, ct.c_void_p),
            repeat=repeat,
        )
        if ctx is not None:
            self._ctx = ct.create_string_buffer(bytes(ctx), len(ctx))
            self.opts.ctx_in, self.opts.ctx_size_in = ct.cast(self._ctx, ct.c_void_p), len(ctx)
        self._ref = ct.byref(self.opts)

    def feed(self, *parts):
        """The next run's frame: parts (bytes-like) one after the other,
        copied into the input buffer."""
        buf, off = memoryview(self._in).cast("B"), 0
        for part in parts:
            part = memoryview(part).cast("B")
            buf[off : off + part.nbytes] = part
            off += part.nbytes
        self.opts.data_size_in = off

    def run(self):
        self.opts.data_size_out = self._out_size
        _check(_lib.bpf_prog_test_run_opts(self.prog_fd, self._ref), "BPF_PROG_TEST_RUN")
        return self.opts.retval, self.opts.duration

    def output(self):
        return self._out.raw[: self.opts.data_size_out]


def test_run(prog_fd, frame, repeat=1, ctx=None):
    """BPF_PROG_TEST_RUN once: returns (verdict, output frame, ns per run)."""
    t = TestRun(prog_fd, frame, repeat, ctx=ctx)
    verdict, ns = t.run()
    return verdict, t.output(), ns


def btf_fd_by_name(name):
    """A new fd of the kernel BTF object called name (a module's), found by
    walking the loaded BTF objects (needs CAP_SYS_ADMIN)."""
    start = ct.c_uint32(0)
    while _lib.bpf_btf_get_next_id(start.value, ct.byref(start)) == 0:
        fd = _lib.bpf_btf_get_fd_by_id(start.value)
        if fd < 0:
            _check(fd, "open BTF object %d" % start.value)
        # struct bpf_btf_info: btf, btf_size, id, name (a pointer we give), name_len, kernel_btf
        buf = ct.create_string_buffer(64)
        info = struct.pack("<QIIQII", 0, 0, 0, ct.addressof(buf), len(buf), 0)
        raw = ct.create_string_buffer(info, len(info))
        n = ct.c_uint32(len(info))
        try:
            _check(_lib.bpf_obj_get_info_by_fd(fd, raw, ct.byref(n)), "BTF object info")
        except OSError:
            os.close(fd)
            raise
        if buf.value.decode() == name:
            return fd
        os.close(fd)
    raise OSError(errno.ENOENT, "no kernel BTF object named %s" % name)


def prog_load(prog_type, name, license, code, fd_array):
    """BPF_PROG_LOAD of instructions code with fd_array (which bcc cannot
    pass); the new program's fd. A refusal is loaded again with the
    verifier's log, whose last lines go into the error. Needs libbpf 1.x:
    0.x has an older bpf_prog_load of another signature."""
    if LIBBPF_MAJOR < 1:
        raise OSError(errno.ENOSYS, "load %s: needs libbpf 1.x (fd_array), found libbpf.so.0" % name)
    insns = ct.create_string_buffer(code, len(code))
    fds = (ct.c_int * len(fd_array))(*fd_array)
    log = ct.create_string_buffer(1 << 22)
    for level in (0, 1):
        opts = _opts(_ProgLoadOpts, fd_array=fds)
        if level:
            opts.log_level, opts.log_size, opts.log_buf = 1, len(log), ct.cast(log, ct.c_char_p)
        fd = _lib.bpf_prog_load(prog_type, name.encode()[:15], license, insns, len(code) // 8, ct.byref(opts))
        if fd >= 0:
            return fd
        err = -fd if fd != -1 else ct.get_errno()
    tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
    raise OSError(err, "load %s: %s: %s" % (name, os.strerror(err), " / ".join(tail)))


def prog_fd_by_id(prog_id):
    """A new fd for program prog_id (needs CAP_SYS_ADMIN)."""
    return _check(_lib.bpf_prog_get_fd_by_id(prog_id), "open program %d" % prog_id)


def prog_name(prog_id):
    """The name the kernel holds for program prog_id, for messages: '' if
    it is gone or we may not open it by id (that needs CAP_SYS_ADMIN)."""
    fd = _lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return ""
    try:
        return _info(fd)[64:80].split(b"\0", 1)[0].decode()  # bpf_prog_info.name
    finally:
        os.close(fd)
