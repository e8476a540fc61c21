"""Compiling, loading, attaching and detaching the data path.

One interface at a time: the XDP program (bpf/xdp_synguard.c) on the
interface, the tc ingress program (bpf/tc_handoff.c) behind it, their maps
pinned under /sys/fs/bpf/synguard/IFACE/ and a run-state file under
/run/synguard/ that records what was attached, so that `synguard detach`
removes exactly that, also after a crash.
"""

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import time
from dataclasses import asdict, dataclass, field

from . import kfunc, layout, libbpf

XDP_PROG = "synguard_xdp"
DROP_PROG = "synguard_syncache_drop"
DROP_PIN = "prog_syncache_drop"
TC_PROG = "synguard_tc"
KFUNC = "bpf_sk_assign_tcp_reqsk"
RUN_DIR = "/run/synguard"
# Our tc filter's place on the ingress hook: handle 1, priority "SG".
TC_HANDLE, TC_PRIORITY = 1, 0x5347
BPF_FS_MAGIC = 0xCAFE4A11

MODES = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}
MODE_NAMES = {libbpf.XDP_ATTACHED_DRV: "native", libbpf.XDP_ATTACHED_SKB: "generic"}


class AttachError(Exception):
    """Bad input or a refused attach: reported as one line, exit code 2."""


def valid_ifname(name):
    # Interface names become part of a path and of a -D string for clang.
    return 0 < len(name) < 16 and all(c.isalnum() or c in "._-@" for c in name)


def ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return 0


def if_mtu(ifname):
    """MTU by ioctl (sysfs shows the netns that mounted it, not ours)."""
    SIOCGIFMTU = 0x8921
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16si12x", ifname.encode(), 0)
        return struct.unpack("16si12x", fcntl.ioctl(s, SIOCGIFMTU, req))[1]


def pin_dir(ifname):
    return os.path.join(layout.PIN_ROOT, ifname)


def state_path(ifname):
    return os.path.join(RUN_DIR, ifname + ".json")


def ensure_bpffs(root="/sys/fs/bpf"):
    """Mount bpffs at root if it is not there (many hosts never mount it)."""
    if _fs_magic(root) == BPF_FS_MAGIC:
        return False
    os.makedirs(root, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", root.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount bpffs at %s: %s" % (root, os.strerror(err)))
    return True


def _fs_magic(path):
    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = StatFs()
    if libc.statfs(path.encode(), ctypes.byref(buf)) != 0:
        return 0
    return buf.f_type & 0xFFFFFFFF


def read_sysctl(name, default=None):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().split()
    except OSError:
        return default


def write_sysctl(name, value):
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


def kernel_wscale():
    """The window scale Linux itself would offer: the smallest shift that
    covers the largest receive buffer (tcp_select_initial_window)."""
    rmem = read_sysctl("net.ipv4.tcp_rmem", ["4096", "131072", "6291456"])
    core = read_sysctl("net.core.rmem_max", ["212992"])
    space = max(int(rmem[2]), int(core[0]))
    return max(0, min(14, space.bit_length() - 1 - 15))


def kernel_config(ifname, **syncache):
    """sg_config from the interface and this network namespace's sysctls;
    the settings (the seed's syncache, the reflection limit) are the
    defaults unless given."""
    mtu = if_mtu(ifname)
    cfg = layout.Config(**{**layout.SETTING_DEFAULTS, **syncache})
    cfg.prefix_seed = int.from_bytes(os.urandom(8), "little")
    cfg.mss4 = max(layout.mss_table(False)[0], min(mtu - 40, 65535))
    cfg.mss6 = max(layout.mss_table(True)[0], min(mtu - 60, 65535))
    cfg.window = 65535  # the seed's TCP_MAXWIN; SYN windows are never scaled
    cfg.wscale = kernel_wscale()
    cfg.ttl = int(read_sysctl("net.ipv4.ip_default_ttl", ["64"])[0])
    flags = 0
    for sysctl, bit in (
        ("net.ipv4.tcp_window_scaling", layout.CF_WSCALE),
        ("net.ipv4.tcp_sack", layout.CF_SACK),
        ("net.ipv4.tcp_timestamps", layout.CF_TIMESTAMPS),
    ):
        if read_sysctl(sysctl, ["0"])[0] != "0":
            flags |= bit
    cfg.flags = flags
    return cfg.derive()


def source_hash():
    """Identifies the data path's C sources: a controller only adopts
    programs built from the sources it would build itself."""
    h = hashlib.sha256()
    for path in sorted(layout.bpf_dir().iterdir()):
        if path.suffix in (".c", ".h"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


class Datapath:
    """Both programs compiled and loaded, their maps pinned under pins.

    The two hooks' files are compiled as one bcc module: one clang run, and
    the maps are made once. Compiled apart, the second module would re-open
    the first one's pinned maps, which bcc does by map id and that needs
    CAP_SYS_ADMIN. Nothing is attached here: tests run the programs with
    BPF_PROG_TEST_RUN, attach() puts them on an interface."""

    SOURCES = ("xdp_synguard.c", "tc_handoff.c")

    def __init__(self, pins, syncache_max=65536):
        from bcc import BPF

        self.pins = pins
        os.makedirs(pins, exist_ok=True)
        src = layout.bpf_dir()
        cflags = [
            "-I%s" % src,
            '-DSG_PIN_DIR="%s"' % pins,
            "-DSG_SYNCACHE_MAX=%d" % syncache_max,
            "-Wno-unused-function",
            "-Wno-compare-distinct-pointer-types",
        ]
        # #line keeps compiler messages pointing at the right file and line.
        text = "".join('#line 1 "%s"\n%s\n' % (src / name, (src / name).read_text()) for name in self.SOURCES)
        self.bpf = BPF(text=text.encode(), cflags=cflags)
        self.xdp_fd = self.bpf.load_func(XDP_PROG.encode(), BPF.XDP).fd
        self.drop_fd = self.bpf.load_func(DROP_PROG.encode(), BPF.XDP).fd
        kfunc.patch_bcc_function(self.bpf, TC_PROG, KFUNC)
        self.tc_fd = self.bpf.load_func(TC_PROG.encode(), BPF.SCHED_CLS).fd

    def open_maps(self):
        return Maps(self.pins)

    def pin_drop_prog(self):
        """Pinned so that a controller restarted later can adopt this data
        path without compiling it again."""
        libbpf.obj_pin(self.drop_fd, os.path.join(self.pins, DROP_PIN))

    def close(self):
        self.bpf.cleanup()


class Adopted:
    """A data path left attached by a controller that is gone: the pinned
    maps and the pinned drop program, nothing compiled."""

    def __init__(self, pins):
        self.pins = pins
        self.drop_fd = libbpf.obj_get(os.path.join(pins, DROP_PIN))

    def open_maps(self):
        return Maps(self.pins)

    def close(self):
        os.close(self.drop_fd)


class Maps:
    """The pinned maps of one interface, opened through libbpf."""

    def __init__(self, pins):
        u32 = ctypes.c_uint32
        self.secrets = libbpf.PinnedMap(pins + "/secrets", u32, layout.Secrets)
        self.config = libbpf.PinnedMap(pins + "/config", u32, layout.Config)
        self.listeners = libbpf.PinnedMap(pins + "/listeners", u32, u32)
        self.counters = libbpf.PinnedMap(pins + "/counters", u32, ctypes.c_uint64, percpu=True)
        self.syncache = libbpf.PinnedMap(pins + "/syncache", layout.Flow, layout.SyncacheEntry)
        self.syncache_state = libbpf.PinnedMap(pins + "/syncache_state", u32, layout.SyncacheState)
        self.syncache_buckets = libbpf.PinnedMap(pins + "/syncache_buckets", u32, u32)
        self._all = (
            self.secrets,
            self.config,
            self.listeners,
            self.counters,
            self.syncache,
            self.syncache_state,
            self.syncache_buckets,
        )

    def _slots(self):
        """Per-CPU totals of every slot: [0, 64) IPv4 or no family, then IPv6
        (one batch syscall)."""
        slots = [0] * (2 * layout.COUNTER_SLOTS)
        for keys, values, n in self.counters.batches():
            for k, v in zip(keys[:n], values[:n]):
                slots[k] = sum(v)  # simple ctypes come back as ints
        return slots

    def read_counters(self):
        """{name: total over CPUs and families}, read now (no cache)."""
        slots = self._slots()
        return {
            name: slots[i] + slots[i + layout.COUNTER_SLOTS] for i, name in enumerate(layout.counter_names())
        }

    def read_counters_by_family(self):
        """({name: n} of the family-less counters, {family: {name: n}})."""
        slots = self._slots()
        plain, families = {}, {"inet": {}, "inet6": {}}
        for i, name in enumerate(layout.counter_names()):
            if name in layout.FAMILYLESS:
                plain[name] = slots[i]
            else:
                families["inet"][name] = slots[i]
                families["inet6"][name] = slots[i + layout.COUNTER_SLOTS]
        return plain, families

    def add_counters(self, ipv6, **amounts):
        """Add to counters only the controller writes (no BPF program
        touches those slots, so read-modify-write is safe)."""
        names = layout.counter_names()
        for name, n in amounts.items():
            if n:
                idx = names.index(name) + (layout.COUNTER_SLOTS if ipv6 else 0)
                values = self.counters.lookup(idx)
                values[0].value += n
                per_cpu = (ctypes.c_uint64 * len(values))(*[v.value for v in values])
                self.counters.update(idx, per_cpu)

    def ports(self):
        return [p for p in range(1, layout.LISTENER_SLOTS) if self.listeners.lookup(p).value]

    def set_ports(self, ports):
        for p in ports:
            self.listeners.update(p, ctypes.c_uint32(1))

    def close(self):
        for m in self._all:
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class RunState:
    """What one `synguard attach` put on an interface (the run-state file)."""

    ifname: str
    ifindex: int
    pid: int
    mode: str
    ports: list
    rotate_seconds: float
    xdp_prog_id: int = 0
    tc_prog_id: int = 0
    created_clsact: bool = False
    metrics_addr: str = ""
    restore_syncookies: str = ""  # net.ipv4.tcp_syncookies before attach changed it
    source_hash: str = ""
    started: float = field(default_factory=time.time)

    def save(self):
        os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        tmp = state_path(self.ifname) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, state_path(self.ifname))

    @classmethod
    def load(cls, ifname):
        try:
            with open(state_path(ifname)) as f:
                return cls(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def controller_alive(self):
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def check_can_attach(ifname, force):
    """Refuse (AttachError) what must not go ahead; returns the ifindex."""
    if not valid_ifname(ifname):
        raise AttachError("invalid interface name %r" % ifname)
    idx = ifindex(ifname)
    if not idx:
        raise AttachError("no interface named %s" % ifname)
    if os.geteuid() != 0:
        raise AttachError("attaching needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)")
    try:
        import bcc  # noqa: F401  (checked before anything is touched)
    except ImportError:
        raise AttachError("bcc is missing: install python3-bpfcc (deploy/install.sh)") from None
    if kfunc.btf_func_id(KFUNC) is None:
        raise AttachError(
            "kernel %s lacks %s: synguard needs Linux >= 6.9 with BTF" % (os.uname().release, KFUNC)
        )
    prog_id, _mode = libbpf.xdp_query(idx)
    if prog_id:
        name = libbpf.prog_name(prog_id)
        if name == XDP_PROG:
            state = RunState.load(ifname)
            if state and state.controller_alive() and state.pid != os.getpid():
                raise AttachError("%s is already protected by synguard (pid %d)" % (ifname, state.pid))
        elif not force:
            raise AttachError(
                "%s already has an XDP program (id %d, %r); --force replaces it" % (ifname, prog_id, name)
            )
    return idx


def attach(
    ifname, ports, mode="auto", force=False, rotate_seconds=16.0, metrics_addr="", syncache=None, rotator=None
):
    """Load, pin and attach; or adopt what a controller that died left
    attached. syncache: sg_config fields that differ from the defaults;
    rotator(secrets map): the key source (KeyRotator unless given).
    Returns (Datapath or Adopted, Maps, RunState, adopted). On failure
    everything attached so far is removed again before the error is raised."""
    idx = check_can_attach(ifname, force)
    leftover = adoptable(ifname, idx)
    if leftover:
        return adopt(leftover, ports, rotate_seconds, metrics_addr, syncache or {}) + (True,)
    prog_id, _ = libbpf.xdp_query(idx)
    if prog_id and libbpf.prog_name(prog_id) == XDP_PROG:
        detach(ifname)  # left by an older synguard, or half attached: start clean
    ensure_bpffs()
    pins = pin_dir(ifname)
    shutil.rmtree(pins, ignore_errors=True)
    state = RunState(
        ifname,
        idx,
        os.getpid(),
        mode,
        sorted(ports),
        rotate_seconds,
        metrics_addr=metrics_addr,
        source_hash=source_hash(),
    )
    dp = maps = None
    try:
        cachelimit = (syncache or {}).get("cachelimit", layout.SYNCACHE_DEFAULTS["cachelimit"])
        dp = Datapath(pins, layout.syncache_map_size(cachelimit))
        dp.pin_drop_prog()
        maps = dp.open_maps()
        maps.config.update(0, kernel_config(ifname, **(syncache or {})))
        maps.set_ports(ports)
        from .secrets import KeyRotator  # late: keeps this module's imports small

        (rotator or KeyRotator)(maps.secrets).install_initial()
        state.created_clsact = libbpf.tc_clsact_create(idx)
        state.save()  # from here on, detach() knows what to undo
        state.tc_prog_id = libbpf.tc_attach(idx, dp.tc_fd, TC_HANDLE, TC_PRIORITY)
        # tc first: no validated ACK may arrive before the hand-off exists.
        state.mode = _attach_xdp(idx, dp.xdp_fd, mode, force)
        state.xdp_prog_id, _ = libbpf.xdp_query(idx)
        state.save()
    except BaseException:
        if maps:
            maps.close()
        if dp:
            dp.close()
        detach(ifname, state)
        raise
    return dp, maps, state, False


def adoptable(ifname, idx):
    """The run state of a complete synguard data path on ifname whose
    controller is gone and whose programs were built from our sources;
    None otherwise."""
    state = RunState.load(ifname)
    if not state or state.controller_alive() or state.source_hash != source_hash():
        return None
    prog_id, _ = libbpf.xdp_query(idx)
    pins = pin_dir(ifname)
    if (
        prog_id != state.xdp_prog_id
        or libbpf.tc_query(idx, TC_HANDLE, TC_PRIORITY) != state.tc_prog_id
        or not os.path.exists(os.path.join(pins, DROP_PIN))
    ):
        return None
    return state


def adopt(state, ports, rotate_seconds, metrics_addr, syncache):
    """Take over a data path left attached: keep its keys (cookies already
    sent stay valid), its syncache and its counters; apply this attach's
    ports and settings."""
    pins = pin_dir(state.ifname)
    dp = Adopted(pins)
    maps = dp.open_maps()
    try:
        old = maps.config.lookup(0)
        size = maps.syncache.max_entries
        if syncache.get("cachelimit", 0) > size:
            raise AttachError(
                "cachelimit can grow to %d while the data path stays attached; "
                "synguard detach %s first for more" % (size, state.ifname)
            )
        cfg = kernel_config(state.ifname, **syncache)
        cfg.prefix_seed = old.prefix_seed  # the rate limiter's buckets stay meaningful
        maps.config.update(0, cfg.derive())
        for port in set(maps.ports()) - set(ports):
            maps.listeners.update(port, ctypes.c_uint32(0))
        maps.set_ports(ports)
    except BaseException:
        maps.close()
        dp.close()
        raise
    state.pid = os.getpid()
    state.ports = sorted(ports)
    state.rotate_seconds = rotate_seconds
    state.metrics_addr = metrics_addr
    state.save()
    return dp, maps, state


def _attach_xdp(idx, fd, mode, force):
    flags = 0 if force else libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST
    if mode == "auto":
        try:
            libbpf.xdp_attach(idx, fd, flags | MODES["native"])
            return "native"
        except OSError:
            mode = "generic"
    try:
        libbpf.xdp_attach(idx, fd, flags | MODES[mode])
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise AttachError("another XDP program holds the interface; --force replaces it") from e
        raise AttachError("the driver refused XDP in %s mode: %s" % (mode, e.strerror)) from e
    return mode


def detach(ifname, state=None):
    """Remove what synguard attached to ifname: our XDP program, our tc
    filter, the clsact qdisc if we created it, the pins, the run-state file.
    Returns the list of things removed (empty if nothing was there)."""
    state = state or RunState.load(ifname)
    removed = []
    idx = ifindex(ifname)
    if idx:
        prog_id, attach_mode = libbpf.xdp_query(idx)
        if prog_id and libbpf.prog_name(prog_id) == XDP_PROG:
            flag = (
                libbpf.XDP_FLAGS_SKB_MODE
                if attach_mode == libbpf.XDP_ATTACHED_SKB
                else libbpf.XDP_FLAGS_DRV_MODE
            )
            libbpf.xdp_detach(idx, flag)
            removed.append("xdp")
        tc_id = libbpf.tc_query(idx, TC_HANDLE, TC_PRIORITY)
        if tc_id and libbpf.prog_name(tc_id) == TC_PROG:
            libbpf.tc_detach(idx, TC_HANDLE, TC_PRIORITY)
            removed.append("tc")
        if state and state.created_clsact:
            try:
                libbpf.tc_clsact_destroy(idx)
                removed.append("clsact")
            except OSError:
                pass
    if state and state.restore_syncookies:
        write_sysctl("net.ipv4.tcp_syncookies", state.restore_syncookies)
        removed.append("net.ipv4.tcp_syncookies=" + state.restore_syncookies)
    pins = pin_dir(ifname)
    if os.path.isdir(pins):
        shutil.rmtree(pins, ignore_errors=True)
        removed.append("pins")
    try:
        os.rmdir(layout.PIN_ROOT)  # only when no other interface is protected
    except OSError:
        pass
    try:
        os.unlink(state_path(ifname))
        removed.append("state")
    except FileNotFoundError:
        pass
    return removed
