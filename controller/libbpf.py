"""The few libbpf calls synguard needs, through ctypes.

libbpf.so.1 comes with bcc on Debian (bcc links it), so this adds no
dependency. It gives us what bcc 0.26's Python side lacks: opening pinned
maps from another process, XDP attach/query by ifindex, tc clsact hooks,
BPF_PROG_TEST_RUN and program info. All calls act in the calling thread's
network namespace. Every wrapper raises OSError with the errno on failure.
"""

import ctypes as ct
import errno
import os

_lib = ct.CDLL("libbpf.so.1", use_errno=True)
# libbpf would print the kernel's extack messages to stderr on expected
# misses (querying a hook that is not there); errors reach us as errno.
_lib.libbpf_set_print(None)

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4

XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB = 0, 1, 2

BPF_TC_INGRESS = 1

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3


def _check(ret, what):
    if ret < 0:
        err = -ret if ret != -1 else ct.get_errno()
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


class _XdpAttachOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("old_prog_fd", ct.c_int)]


class _XdpQueryOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("prog_id", ct.c_uint32),
        ("drv_prog_id", ct.c_uint32),
        ("hw_prog_id", ct.c_uint32),
        ("skb_prog_id", ct.c_uint32),
        ("attach_mode", ct.c_uint8),
    ]


class _TcHook(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("ifindex", ct.c_int),
        ("attach_point", ct.c_int),
        ("parent", ct.c_uint32),
    ]


class _TcOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("prog_fd", ct.c_int),
        ("flags", ct.c_uint32),
        ("prog_id", ct.c_uint32),
        ("handle", ct.c_uint32),
        ("priority", ct.c_uint32),
    ]


def _opts(cls, **kw):
    o = cls(**kw)
    o.sz = ct.sizeof(cls)
    return o


_lib.bpf_obj_get.argtypes = [ct.c_char_p]
_lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
_lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
_lib.bpf_map_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
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
_lib.bpf_xdp_attach.argtypes = [ct.c_int, ct.c_int, ct.c_uint32, ct.POINTER(_XdpAttachOpts)]
_lib.bpf_xdp_detach.argtypes = [ct.c_int, ct.c_uint32, ct.POINTER(_XdpAttachOpts)]
_lib.bpf_xdp_query.argtypes = [ct.c_int, ct.c_int, ct.POINTER(_XdpQueryOpts)]
_lib.bpf_tc_hook_create.argtypes = [ct.POINTER(_TcHook)]
_lib.bpf_tc_hook_destroy.argtypes = [ct.POINTER(_TcHook)]
_lib.bpf_tc_attach.argtypes = [ct.POINTER(_TcHook), ct.POINTER(_TcOpts)]
_lib.bpf_tc_detach.argtypes = [ct.POINTER(_TcHook), ct.POINTER(_TcOpts)]
_lib.bpf_tc_query.argtypes = [ct.POINTER(_TcHook), ct.POINTER(_TcOpts)]
_lib.bpf_prog_get_fd_by_id.argtypes = [ct.c_uint32]
_lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]


def obj_pin(fd, path):
    _check(_lib.bpf_obj_pin(fd, path.encode()), "pin " + path)


def obj_get(path):
    """A new fd for the object (map or program) pinned at path."""
    return _check(_lib.bpf_obj_get(path.encode()), "open " + path)


def num_possible_cpus():
    return _check(_lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


class PinnedMap:
    """A map opened from its bpffs pin, read and written with ctypes values."""

    def __init__(self, path, key_type, value_type, percpu=False):
        self.path = path
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        self.fd = obj_get(path)

    @property
    def max_entries(self):
        info = ct.create_string_buffer(80)  # struct bpf_map_info; max_entries at 16
        size = ct.c_uint32(ct.sizeof(info))
        _check(_lib.bpf_obj_get_info_by_fd(self.fd, info, ct.byref(size)), "map info " + self.path)
        return int.from_bytes(info.raw[16:20], "little")

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
        while True:
            keys = (self.key_type * chunk)()
            values = (value_type * chunk)()
            count = ct.c_uint32(chunk)
            ret = _lib.bpf_map_lookup_batch(
                self.fd, None if first else token, token, keys, values, ct.byref(count), None
            )
            if ret < 0 and ret != -errno.ENOENT:
                _check(ret, "lookup batch " + self.path)
            if count.value:
                yield keys, values, count.value
            if ret == -errno.ENOENT:
                return
            first = False

    def items(self):
        """All (key, value) pairs (views into the batch buffers)."""
        return [kv for keys, values, n in self.batches() for kv in zip(keys[:n], values[:n])]


class TestRun:
    """BPF_PROG_TEST_RUN of one program on one frame, buffers made once so
    that a timing loop allocates nothing. run() returns (verdict, ns); the
    ns is the kernel's own measurement of the run (bpf_test_timer)."""

    def __init__(self, prog_fd, frame, repeat=1, out_size=4096):
        self.prog_fd = prog_fd
        self._in = ct.create_string_buffer(bytes(frame), len(frame))
        self._out = ct.create_string_buffer(out_size)
        self._out_size = out_size
        self.opts = _opts(
            _TestRunOpts,
            data_in=ct.cast(self._in, ct.c_void_p),
            data_size_in=len(frame),
            data_out=ct.cast(self._out, ct.c_void_p),
            repeat=repeat,
        )
        self._ref = ct.byref(self.opts)

    def run(self):
        self.opts.data_size_out = self._out_size
        _check(_lib.bpf_prog_test_run_opts(self.prog_fd, self._ref), "BPF_PROG_TEST_RUN")
        return self.opts.retval, self.opts.duration

    def output(self):
        return self._out.raw[: self.opts.data_size_out]


def test_run(prog_fd, frame, repeat=1):
    """BPF_PROG_TEST_RUN once: returns (verdict, output frame, ns per run).
    The output starts with the metadata area if the program made one."""
    t = TestRun(prog_fd, frame, repeat)
    verdict, ns = t.run()
    return verdict, t.output(), ns


def xdp_attach(ifindex, prog_fd, flags, old_prog_fd=None):
    opts = _opts(_XdpAttachOpts)
    if old_prog_fd is not None:
        opts.old_prog_fd = old_prog_fd
        flags |= XDP_FLAGS_REPLACE
    _check(_lib.bpf_xdp_attach(ifindex, prog_fd, flags, ct.byref(opts)), "attach XDP")


def xdp_detach(ifindex, flags):
    _check(_lib.bpf_xdp_detach(ifindex, flags, ct.byref(_opts(_XdpAttachOpts))), "detach XDP")


def xdp_query(ifindex):
    """(prog_id, mode) of the XDP program on ifindex; (0, NONE) if none."""
    opts = _opts(_XdpQueryOpts)
    _check(_lib.bpf_xdp_query(ifindex, 0, ct.byref(opts)), "query XDP")
    return opts.prog_id, opts.attach_mode


def _ingress_hook(ifindex):
    return _opts(_TcHook, ifindex=ifindex, attach_point=BPF_TC_INGRESS)


def tc_clsact_create(ifindex):
    """Create the clsact qdisc. True if we created it, False if it existed."""
    ret = _lib.bpf_tc_hook_create(ct.byref(_ingress_hook(ifindex)))
    if ret == -errno.EEXIST:
        return False
    _check(ret, "create clsact qdisc")
    return True


def tc_clsact_destroy(ifindex):
    # Both attach points: that removes the qdisc itself, not just filters.
    hook = _ingress_hook(ifindex)
    hook.attach_point = BPF_TC_INGRESS | 2
    _check(_lib.bpf_tc_hook_destroy(ct.byref(hook)), "remove clsact qdisc")


def tc_attach(ifindex, prog_fd, handle, priority):
    opts = _opts(_TcOpts, prog_fd=prog_fd, handle=handle, priority=priority)
    _check(_lib.bpf_tc_attach(ct.byref(_ingress_hook(ifindex)), ct.byref(opts)), "attach tc filter")
    return opts.prog_id


def tc_query(ifindex, handle, priority):
    """prog id of the ingress filter at (handle, priority), or 0."""
    opts = _opts(_TcOpts, handle=handle, priority=priority)
    ret = _lib.bpf_tc_query(ct.byref(_ingress_hook(ifindex)), ct.byref(opts))
    if ret in (-errno.ENOENT, -errno.EINVAL):
        return 0
    _check(ret, "query tc filter")
    return opts.prog_id


def tc_detach(ifindex, handle, priority):
    opts = _opts(_TcOpts, handle=handle, priority=priority)
    _check(_lib.bpf_tc_detach(ct.byref(_ingress_hook(ifindex)), ct.byref(opts)), "detach tc filter")


def prog_name(prog_id):
    """The name the kernel holds for program prog_id ('' if it is gone)."""
    fd = _lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return ""
    try:
        info = ct.create_string_buffer(256)  # struct bpf_prog_info; name at 64
        size = ct.c_uint32(ct.sizeof(info))
        _check(_lib.bpf_obj_get_info_by_fd(fd, info, ct.byref(size)), "program info")
        return info.raw[64:80].split(b"\0", 1)[0].decode()
    finally:
        os.close(fd)
