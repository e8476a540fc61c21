"""Calling kfuncs from a bcc 0.26 program, which cannot emit kfunc calls.

The C side calls a fake helper, one id per kfunc (FAKE_KFUNCS; the same ids
are declared in bpf/tc_handoff.c). Before the program is loaded, each such
`call` instruction in bcc's compiled copy is rewritten into a kfunc call:
src_reg BPF_PSEUDO_KFUNC_CALL, imm the kfunc's BTF id. A kfunc in vmlinux
needs nothing more (off 0) and bcc loads the program. A kfunc in a module
(nf_conntrack's, on distribution kernels) is found in the module's split
BTF under /sys/kernel/btf/MODULE; the call's off is then the index of that
BTF's fd in the fd_array given to BPF_PROG_LOAD, which bcc cannot pass, so
libbpf's bpf_prog_load loads it. Getting a module BTF's fd takes
BPF_BTF_GET_FD_BY_ID, which needs CAP_SYS_ADMIN.
"""

import ctypes as ct
import os
import struct
from dataclasses import dataclass

# SYNGUARD_VMLINUX_BTF points at another BTF file (tests use it to play a
# kernel without the kfunc).
VMLINUX_BTF = os.environ.get("SYNGUARD_VMLINUX_BTF", "/sys/kernel/btf/vmlinux")
BTF_DIR = os.path.dirname(VMLINUX_BTF)
FAKE_KFUNCS = {
    0x7FFFF0: "bpf_sk_assign_tcp_reqsk",
    0x7FFFF1: "bpf_skb_ct_alloc",
    0x7FFFF2: "bpf_ct_set_timeout",
    0x7FFFF3: "bpf_ct_set_status",
    0x7FFFF4: "bpf_ct_insert_entry",
    0x7FFFF5: "bpf_ct_release",
}
CONNTRACK_KFUNCS = tuple(FAKE_KFUNCS[i] for i in range(0x7FFFF1, 0x7FFFF6))
BPF_CALL = 0x85  # BPF_JMP | BPF_CALL
BPF_PSEUDO_KFUNC_CALL = 2
BTF_KIND_FUNC = 12
_BTF_MAGIC = 0xEB9F

# Bytes of kind-specific data after each 12-byte btf_type: (fixed, per vlen).
_KIND_EXTRA = {
    1: (4, 0),  # INT
    3: (12, 0),  # ARRAY
    4: (0, 12),  # STRUCT
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM
    13: (0, 8),  # FUNC_PROTO
    14: (4, 0),  # VAR
    15: (0, 12),  # DATASEC
    17: (4, 0),  # DECL_TAG
    19: (0, 12),  # ENUM64
}


class KfuncError(Exception):
    pass


@dataclass(frozen=True)
class Kfunc:
    name: str
    btf_id: int
    module: str  # '' for vmlinux


class _Btf:
    """The FUNC types of one BTF blob: vmlinux's, or a module's split BTF on
    top of it (type ids and string offsets then continue vmlinux's)."""

    def __init__(self, path, base=None):
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as e:
            raise KfuncError("cannot read kernel BTF (%s): %s" % (path, e.strerror)) from e
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0
        )
        if magic != _BTF_MAGIC:
            raise KfuncError("%s is not BTF" % path)
        self.base = base
        self.first_id = base.next_id if base else 1
        self.str_base = base.str_end if base else 0
        self.str_end = self.str_base + str_len
        self.strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self.funcs = {}
        pos, end, type_id = hdr_len + type_off, hdr_len + type_off + type_len, self.first_id
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, _size = unpack(blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind == BTF_KIND_FUNC:
                self.funcs[name_off] = type_id
            fixed, per = _KIND_EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen
            type_id += 1
        self.next_id = type_id

    def _name_offsets(self, name):
        """Where name is in this BTF's string space: split BTF shares its
        base's strings (offsets below str_base) and adds its own."""
        needle = b"\0" + name.encode() + b"\0"
        off = self.strings.find(needle)
        if off >= 0:
            yield self.str_base + off + 1
        if self.base:
            yield from self.base._name_offsets(name)

    def func_id(self, name):
        for off in self._name_offsets(name):
            if off in self.funcs:
                return self.funcs[off]
        return None


_cache = {}


def _btf(module=""):
    if module not in _cache:
        path = VMLINUX_BTF if not module else os.path.join(BTF_DIR, module)
        _cache[module] = _Btf(path, None if not module else _btf())
    return _cache[module]


def btf_func_id(name):
    """BTF type id of the FUNC called `name` in vmlinux's BTF, or None."""
    return _btf().func_id(name)


def find(name, modules=("nf_conntrack",)):
    """Where kfunc `name` is: vmlinux, else one of modules (if loaded)."""
    btf_id = btf_func_id(name)
    if btf_id is not None:
        return Kfunc(name, btf_id, "")
    for module in modules:
        if os.path.exists(os.path.join(BTF_DIR, module)):
            btf_id = _btf(module).func_id(name)
            if btf_id is not None:
                return Kfunc(name, btf_id, module)
    return None


def fake_calls(code):
    """{fake id: [instruction offsets]} of the FAKE_KFUNCS calls in code."""
    found = {}
    for off in range(0, len(code), 8):
        opcode, regs, _insn_off, imm = struct.unpack_from("<BBhi", code, off)
        if opcode == BPF_CALL and regs == 0 and imm in FAKE_KFUNCS:
            found.setdefault(imm, []).append(off)
    return found


def patch_calls(code, targets):
    """Rewrite the fake calls in code (a writable buffer of instructions):
    targets {fake id: (BTF id, fd_array index)}. Returns how many."""
    patched = 0
    for fake, offsets in fake_calls(code).items():
        btf_id, index = targets[fake]
        for off in offsets:
            struct.pack_into("<BBhi", code, off, BPF_CALL, BPF_PSEUDO_KFUNC_CALL << 4, index, btf_id)
            patched += 1
    return patched


def load(bpf, func_name, prog_type, license=b"GPL"):
    """Patch func_name's kfunc calls in the bcc BPF object and load it;
    returns the program's fd."""
    from bcc import lib  # lazily: `synguard status` works without bcc

    from . import libbpf

    name = func_name.encode()
    start = lib.bpf_function_start(bpf.module, name)
    size = lib.bpf_function_size(bpf.module, name)
    if not start:
        raise KfuncError("no BPF function %s" % func_name)
    code = (ct.c_ubyte * size).from_address(start)  # bcc's own copy, loaded from here
    calls = fake_calls(code)
    kfuncs = {}
    for fake in calls:
        k = find(FAKE_KFUNCS[fake])
        if k is None:
            raise KfuncError("this kernel has no %s" % FAKE_KFUNCS[fake])
        kfuncs[fake] = k
    modules = sorted({k.module for k in kfuncs.values() if k.module})
    index = {m: i + 1 for i, m in enumerate(modules)}  # fd_array[0] is vmlinux's place
    patch_calls(code, {fake: (k.btf_id, index.get(k.module, 0)) for fake, k in kfuncs.items()})
    if not modules:
        return bpf.load_func(name, prog_type).fd
    fds = [libbpf.btf_fd_by_name(m) for m in modules]  # needs CAP_SYS_ADMIN
    try:
        return libbpf.prog_load(prog_type, func_name, license, bytes(code), [0] + fds)
    finally:
        for fd in fds:
            os.close(fd)
