"""Which cookie mode a kernel gets (datapath.cookie_mode), decided from the
functions in its BTF: kernels played by BTF files holding just the
functions named."""

import struct

import pytest
from synguard import datapath, kfunc

HELPERS = [name for name, _ in datapath.KERNEL_MODE_HELPERS] + list(datapath.COMPAT)
LINUX_6_9 = HELPERS + [datapath.KFUNC]
LINUX_6_1 = HELPERS  # Debian 12
LINUX_5_15 = [h for h in HELPERS if h != "bpf_xdp_load_bytes"]  # Ubuntu 22.04
LINUX_5_10 = [h for h in LINUX_5_15 if h != "bpf_ktime_get_coarse_ns"]  # Debian 11
LINUX_5_4 = [h for h in LINUX_5_10 if h != "bpf_jiffies64"]  # Ubuntu 20.04
LINUX_5_2 = ["bpf_tcp_check_syncookie"]


def btf_with_functions(path, names):
    """[1] INT, [2] FUNC_PROTO returning it, then one FUNC per name."""
    strings = b"\0int\0" + b"".join(n.encode() + b"\0" for n in names)
    types = struct.pack("<IIII", 1, 1 << 24, 4, 32) + struct.pack("<III", 0, 13 << 24, 1)
    off = 5
    for n in names:
        types += struct.pack("<III", off, 12 << 24, 2)
        off += len(n) + 1
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    path.write_bytes(hdr + types + strings)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """kernel(functions): vmlinux's BTF holds just those from now on."""

    def play(names):
        btf = tmp_path / "vmlinux"
        btf_with_functions(btf, names)
        monkeypatch.setattr(kfunc, "VMLINUX_BTF", str(btf))
        monkeypatch.setattr(kfunc, "_cache", {})

    return play


@pytest.mark.parametrize(
    "functions,requested,mode",
    [
        (LINUX_6_9, "auto", "synguard"),
        (LINUX_6_9, "synguard", "synguard"),
        (LINUX_6_9, "kernel", "kernel"),
        (LINUX_6_1, "auto", "kernel"),
        (LINUX_6_1, "kernel", "kernel"),
        (LINUX_5_15, "auto", "kernel"),
        (LINUX_5_10, "auto", "kernel"),
    ],
)
def test_the_mode_each_kernel_gets(kernel, functions, requested, mode):
    kernel(functions)
    assert datapath.cookie_mode(requested) == mode


@pytest.mark.parametrize(
    "functions,defines",
    [
        (LINUX_6_1, []),
        (LINUX_5_15, ["SG_COMPAT_LOAD_BYTES"]),
        (LINUX_5_10, ["SG_COMPAT_LOAD_BYTES", "SG_COMPAT_COARSE_CLOCK"]),
        (LINUX_5_4, ["SG_COMPAT_LOAD_BYTES", "SG_COMPAT_COARSE_CLOCK", "SG_COMPAT_JIFFIES"]),
    ],
)
def test_what_the_data_path_does_without(kernel, functions, defines):
    kernel(functions)
    assert datapath.compat_defines() == defines


@pytest.mark.parametrize(
    "functions,requested,says",
    [
        (LINUX_6_1, "synguard", "lacks bpf_sk_assign_tcp_reqsk (Linux >= 6.9): use --cookies kernel"),
        (LINUX_5_15, "synguard", "lacks bpf_sk_assign_tcp_reqsk (Linux >= 6.9)"),
        (LINUX_5_2, "auto", "lacks bpf_tcp_gen_syncookie (Linux >= 5.3)"),
        ([], "auto", "lacks bpf_tcp_gen_syncookie (Linux >= 5.3)"),
    ],
)
def test_a_kernel_that_cannot_is_named(kernel, functions, requested, says):
    kernel(functions)
    with pytest.raises(datapath.ModeError, match=r"\(") as e:
        datapath.cookie_mode(requested)
    assert says in str(e.value)


def test_a_kernel_without_btf(monkeypatch, tmp_path):
    monkeypatch.setattr(kfunc, "VMLINUX_BTF", str(tmp_path / "none"))
    monkeypatch.setattr(kfunc, "_cache", {})
    with pytest.raises(datapath.ModeError, match="cannot read kernel BTF"):
        datapath.cookie_mode("auto")
