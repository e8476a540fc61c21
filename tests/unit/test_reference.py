"""The pure-Python pieces the data path is checked against: SipHash, the
cookie tables, the BTF lookup and the kfunc patch."""

import ctypes
import struct
import subprocess

import pytest
from synguard import kfunc, layout
from synguard.lab import cookie


def test_siphash_reference_vectors():
    # From the SipHash paper's reference implementation (vectors.h).
    key = bytes(range(16))
    assert cookie.siphash24(key, b"") == 0x726FDB47DD0E0E31
    assert cookie.siphash24(key, bytes(range(8))) == 0x93F5F5799A932462
    assert cookie.siphash24(key, bytes(range(15))) == 0xA129CA6149BE45E5


def test_tables_respect_the_kernel_minimums():
    # bpf_sk_assign_tcp_reqsk refuses an MSS below 536 (v4) / 1220 (v6)
    assert layout.mss_table(False)[0] == 536
    assert layout.mss_table(True)[0] == 1220
    for t in (layout.mss_table(False), layout.mss_table(True), layout.wscale_table()):
        assert len(t) == 8 and list(t) == sorted(t)
    assert max(layout.wscale_table()) <= 14


def test_round_down():
    t4 = layout.mss_table(False)
    assert cookie.mss_index(1460, False) == t4.index(1460)
    assert cookie.mss_index(1459, False) == t4.index(1452)
    assert cookie.mss_index(100, False) == 0
    assert cookie.wscale_index(None) == 0
    assert layout.wscale_table()[cookie.wscale_index(5)] == 4


def test_meta_round_trip():
    for mss_idx in range(8):
        for ws_idx in range(8):
            for sack in (0, 1):
                for slot in (0, 1):
                    meta = cookie.meta_byte(mss_idx, ws_idx, sack, slot)
                    mss, ws, s, sl = cookie.decode_meta(meta, False)
                    assert mss == layout.mss_table(False)[mss_idx]
                    assert ws == (layout.wscale_table()[ws_idx] if ws_idx else None)
                    assert (s, sl) == (bool(sack), slot)


def test_check_ack_accepts_only_the_right_cookie():
    keys = [bytes(16), bytes(range(16))]
    meta = cookie.meta_byte(6, 4, 1, 1)
    iss = cookie.make_iss(keys[1], "198.18.0.1", "198.18.0.2", 1234, 80, 1000, meta)
    assert cookie.check_ack(keys, "198.18.0.1", "198.18.0.2", 1234, 80, 1001, iss + 1)
    assert not cookie.check_ack(keys, "198.18.0.1", "198.18.0.2", 1234, 80, 1002, iss + 1)
    assert not cookie.check_ack(keys[::-1], "198.18.0.1", "198.18.0.2", 1234, 80, 1001, iss + 1)


def test_counter_names_come_from_maps_h():
    names = layout.counter_names()
    assert names[0] == "packets"
    assert {"sendcookie", "recvcookie", "badcookie", "passed", "malformed", "completed", "aborted"} <= set(
        names
    )


def test_btf_id_agrees_with_bpftool():
    btf_id = kfunc.btf_func_id("bpf_sk_assign_tcp_reqsk")
    if btf_id is None:
        pytest.skip("kernel without bpf_sk_assign_tcp_reqsk")
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", kfunc.VMLINUX_BTF], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("bpftool cannot read BTF here")
    assert "[%d] FUNC 'bpf_sk_assign_tcp_reqsk'" % btf_id in out.stdout
    assert kfunc.btf_func_id("no_such_function_anywhere") is None


def test_patch_rewrites_only_the_fake_helper_calls():
    assign, alloc = 0x7FFFF0, 0x7FFFF1
    assert kfunc.FAKE_KFUNCS[assign] == "bpf_sk_assign_tcp_reqsk"
    insns = [
        (0xB7, 0x01, 0, 5),  # r1 = 5
        (0x85, 0x00, 0, 1),  # call bpf_map_lookup_elem
        (0x85, 0x00, 0, assign),
        (0x85, 0x00, 0, alloc),
        (0x95, 0x00, 0, 0),  # exit
    ]
    code = (ctypes.c_ubyte * 40).from_buffer_copy(b"".join(struct.pack("<BBhi", *i) for i in insns))
    # bpf_sk_assign_tcp_reqsk in vmlinux (off 0), the other in a module's
    # BTF, fd_array[1] (off 1)
    assert kfunc.patch_calls(code, {assign: (4242, 0), alloc: (90001, 1)}) == 2
    out = [struct.unpack_from("<BBhi", code, off) for off in range(0, 40, 8)]
    assert out[2] == (0x85, kfunc.BPF_PSEUDO_KFUNC_CALL << 4, 0, 4242)
    assert out[3] == (0x85, kfunc.BPF_PSEUDO_KFUNC_CALL << 4, 1, 90001)
    assert out[:2] == insns[:2] and out[4] == insns[4]


def btf_blob(types, strings):
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_btf_without_the_kfunc(tmp_path):
    # A valid BTF blob holding one INT type and no functions.
    path = tmp_path / "btf"
    path.write_bytes(btf_blob(struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", 32), b"\0int\0"))
    btf = kfunc._Btf(str(path))
    assert btf.func_id("bpf_sk_assign_tcp_reqsk") is None
    assert btf.func_id("int") is None  # an INT, not a FUNC


def test_module_btf_is_split_on_vmlinux(tmp_path):
    """A module's BTF continues vmlinux's type ids and string offsets, and
    may name a type with a string of vmlinux's."""
    base = tmp_path / "vmlinux"
    # [1] INT "int", [2] FUNC_PROTO, [3] FUNC "f_base"
    base.write_bytes(
        btf_blob(
            struct.pack("<IIII", 1, 1 << 24, 4, 32)
            + struct.pack("<III", 0, 13 << 24, 1)
            + struct.pack("<III", 5, 12 << 24, 2),
            b"\0int\0f_base\0shared\0",
        )
    )
    module = tmp_path / "nf_conntrack"
    base_str_len = len(b"\0int\0f_base\0shared\0")
    # [4] FUNC "bpf_ct_release" (module string), [5] FUNC "shared" (vmlinux's string)
    module.write_bytes(
        btf_blob(
            struct.pack("<III", base_str_len + 1, 12 << 24, 2) + struct.pack("<III", 12, 12 << 24, 2),
            b"\0bpf_ct_release\0",
        )
    )
    vmlinux = kfunc._Btf(str(base))
    mod = kfunc._Btf(str(module), vmlinux)
    assert vmlinux.func_id("f_base") == 3 and vmlinux.func_id("bpf_ct_release") is None
    assert mod.func_id("bpf_ct_release") == 4
    assert mod.func_id("shared") == 5
