"""Calling a kfunc from a bcc 0.26 program.

bcc cannot emit a kfunc call. The C side calls a fake helper with an id no
real helper has (SG_FAKE_HELPER); this module finds the kfunc's BTF id in the
running kernel's BTF and rewrites those call instructions, in bcc's compiled
copy of the program, into kfunc calls (src_reg = BPF_PSEUDO_KFUNC_CALL,
imm = BTF id) before bcc loads it.
"""

import ctypes as ct
import os
import struct

# SYNGUARD_VMLINUX_BTF points at another BTF file (tests use it to play a
# kernel without the kfunc).
VMLINUX_BTF = os.environ.get("SYNGUARD_VMLINUX_BTF", "/sys/kernel/btf/vmlinux")
SG_FAKE_HELPER = 0x7FFFF0
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


def btf_func_id(name, path=VMLINUX_BTF):
    """BTF type id of the FUNC called `name` in the kernel's BTF, or None."""
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
    strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
    target = strings.find(b"\0" + name.encode() + b"\0")
    if target < 0:
        return None
    target += 1  # the name's offset in the string section

    pos, end, type_id = hdr_len + type_off, hdr_len + type_off + type_len, 1
    unpack = struct.Struct("<III").unpack_from
    while pos < end:
        name_off, info, _size = unpack(blob, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == BTF_KIND_FUNC and name_off == target:
            return type_id
        fixed, per = _KIND_EXTRA.get(kind, (0, 0))
        pos += 12 + fixed + per * vlen
        type_id += 1
    return None


def patch_calls(code, btf_id):
    """Rewrite every `call SG_FAKE_HELPER` in code (a writable ctypes buffer
    of BPF instructions) into a kfunc call. Returns how many were patched."""
    patched = 0
    for off in range(0, len(code), 8):
        opcode, regs, insn_off, imm = struct.unpack_from("<BBhi", code, off)
        if opcode == BPF_CALL and imm == SG_FAKE_HELPER and regs == 0:
            struct.pack_into("<BBhi", code, off, BPF_CALL, BPF_PSEUDO_KFUNC_CALL << 4, 0, btf_id)
            patched += 1
    return patched


def patch_bcc_function(bpf, func_name, kfunc_name):
    """Patch func_name in the bcc BPF object `bpf` in place, before load_func."""
    from bcc import lib  # bcc is imported lazily: `synguard status` works without it

    btf_id = btf_func_id(kfunc_name)
    if btf_id is None:
        raise KfuncError("this kernel has no %s (Linux >= 6.9 is needed)" % kfunc_name)
    name = func_name.encode()
    start = lib.bpf_function_start(bpf.module, name)
    size = lib.bpf_function_size(bpf.module, name)
    if not start:
        raise KfuncError("no BPF function %s" % func_name)
    code = (ct.c_ubyte * size).from_address(start)  # bcc's own copy, loaded from here
    if patch_calls(code, btf_id) == 0:
        raise KfuncError("%s has no call to patch" % func_name)
