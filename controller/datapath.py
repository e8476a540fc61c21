"""The data path's programs: compiled with bcc, loaded, pinned.

The hooks' files are compiled as one bcc module (common.c first): one clang
run, and the maps are made once. attach builds it in a short-lived process
of its own (build()), so that the controller, which runs for months, never
maps LLVM: bcc's compile left it holding about 200 MB. Compiled apart, the second module would
re-open the first one's pinned maps, which bcc does by map id and that
needs CAP_SYS_ADMIN. The programs are pinned beside the maps, so that
another process can tell whether what is attached is ours (by program id,
which needs no CAP_SYS_ADMIN) and a restarted controller can adopt it
without compiling. Nothing is attached here (attach.py does that).

Two cookie modes (COOKIE_MODES), one build each: `synguard` (our SipHash
cookies, the socket made by tc with bpf_sk_assign_tcp_reqsk, Linux >= 6.9)
and `kernel` (the kernel's own cookies and cookie check, bpf/kcookie.h, for
the kernels before that).
"""

import ctypes
import hashlib
import os
import subprocess
import sys

from . import host, kfunc, layout, libbpf, maps
from .maps import Maps

SOURCES = ("common.c", "xdp_synguard.c", "tc_handoff.c", "syncache_timer.c")
XDP_PROG = "synguard_xdp"
TC_PROG = "synguard_tc"
TIMER_PROG = "synguard_syncache_timer"
PROG_PINS = {XDP_PROG: "prog_xdp", TC_PROG: "prog_tc", TIMER_PROG: "prog_syncache_timer"}
KFUNC = "bpf_sk_assign_tcp_reqsk"
COOKIE_MODES = ("auto", "synguard", "kernel")
# What the kernel's cookies need, and the release that brought each.
KERNEL_MODE_HELPERS = (
    ("bpf_tcp_gen_syncookie", "5.3"),
    ("bpf_tcp_check_syncookie", "5.2"),
)
# Helpers the data path does without where the kernel lacks them (they came
# after 5.3): the define that makes it, for each.
COMPAT = {
    "bpf_xdp_load_bytes": "SG_COMPAT_LOAD_BYTES",  # 5.18; bpf/parse.h
    "bpf_ktime_get_coarse_ns": "SG_COMPAT_COARSE_CLOCK",  # 5.11; the precise clock instead
    "bpf_jiffies64": "SG_COMPAT_JIFFIES",  # 5.5; the clock read at every call
}


def compat_defines():
    """The COMPAT defines this kernel needs (its BTF lacks the helper)."""
    return [define for helper, define in COMPAT.items() if kfunc.btf_func_id(helper) is None]


class ModeError(Exception):
    """This kernel cannot run the cookie mode asked for."""


def _missing_helper():
    """(helper, release) of the first KERNEL_MODE_HELPERS this kernel lacks,
    or None. Helpers are functions in vmlinux's BTF."""
    for name, release in KERNEL_MODE_HELPERS:
        if kfunc.btf_func_id(name) is None:
            return name, release
    return None


def cookie_mode(requested):
    """'synguard' or 'kernel' for requested (COOKIE_MODES): auto takes
    synguard's cookies where the kernel has the hand-off's kfunc, else the
    kernel's. ModeError names what the kernel lacks."""
    release = os.uname().release
    try:
        has_kfunc = kfunc.btf_func_id(KFUNC) is not None
        missing = _missing_helper() if requested != "synguard" else None
    except kfunc.KfuncError as e:
        raise ModeError("%s (synguard needs a kernel with BTF)" % e) from None
    if requested == "synguard" or (requested == "auto" and has_kfunc):
        if has_kfunc:
            return "synguard"
        raise ModeError(
            "kernel %s lacks %s (Linux >= 6.9): use --cookies kernel (or auto), the kernel's own cookies"
            % (release, KFUNC)
        )
    if missing:
        raise ModeError(
            "kernel %s lacks %s (Linux >= %s): synguard needs Linux >= 5.3 (the kernel's cookies) or >= 6.9"
            % (release, missing[0], missing[1])
        )
    return "kernel"


def cflags(pins, syncache_max, conntrack=False, defines=(), cookies="synguard"):
    """conntrack: the tc program also makes the conntrack entry of each
    connection it hands off (firewall.py decides). defines: more -D, for
    tests (a mock of the kfunc's call). cookies: 'synguard' or 'kernel'."""
    return (
        [
            "-I%s" % layout.bpf_dir(),
            '-DSG_PIN_DIR="%s"' % pins,
            "-DSG_SYNCACHE_MAX=%d" % syncache_max,
            "-Wno-unused-function",
            "-Wno-compare-distinct-pointer-types",
        ]
        + (["-DSG_CONNTRACK"] if conntrack else [])
        + (["-DSG_KERNEL_COOKIES"] if cookies == "kernel" else [])
        + ["-D%s" % d for d in defines]
    )


def source_text():
    """The C that bcc compiles: the sources in order, each behind a #line
    so that compiler messages name the right file and line."""
    src = layout.bpf_dir()
    return "".join('#line 1 "%s"\n%s\n' % (src / name, (src / name).read_text()) for name in SOURCES)


def source_hash():
    """Identifies the data path's C sources: a controller only adopts
    programs built from the sources it would build itself."""
    h = hashlib.sha256()
    for path in sorted(layout.bpf_dir().iterdir()):
        if path.suffix in (".c", ".h"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def pinned_ids(pins):
    """{program name: id} of the programs pinned under pins (0: none)."""
    return {name: libbpf.pinned_prog_id(os.path.join(pins, pin)) for name, pin in PROG_PINS.items()}


# Maps that only mean something together: the syncache and its counts.
SHARED_TOGETHER = (("syncache", "syncache_state", "syncache_buckets"),)
# What a data path from before layouts were recorded can share: its keys
# (struct sg_secrets has not changed since fleet mode came, in 0fa8f10).
UNRECORDED_LAYOUTS = ("secrets",)


def bcc_makes_pins():
    """True if this bcc makes and pins a BPF_TABLE_PINNED map whose pin is
    missing: from 0.20. Before, it only opens pins that exist, and by map
    id, which needs CAP_SYS_ADMIN (the unit does not give it): there maps.h
    declares plain maps (SG_COMPAT_PINS) and Datapath pins them."""
    import bcc

    return tuple(int(x) for x in bcc.__version__.split(".")[:2]) >= (0, 20)


def share(old_pins, staging, old_layouts, syncache_max):
    """Pin into staging the maps of the data path at old_pins that this
    version can take as they are: the same layout signature (old_layouts,
    from its run state) and the same kind and size as this version declares.
    The build then opens them instead of making its own, and the new
    programs work on the very maps the old ones do: cookies already issued
    stay valid, the syncache, pending hand-offs, counters and verified
    sources carry over. Returns the names shared: none with a bcc that
    cannot open pins (bcc_makes_pins)."""
    if not bcc_makes_pins():
        return []
    old_layouts = old_layouts or {name: maps.signature(name) for name in UNRECORDED_LAYOUTS}
    ours = maps.signatures()
    shared = set()
    for name, (kind, entries) in maps.declared().items():
        if old_layouts.get(name) != ours[name]:
            continue
        key, value, _ = Maps.LAYOUT[name]
        want = (kind, ctypes.sizeof(key), ctypes.sizeof(value), entries or syncache_max)
        try:
            if libbpf.map_info(os.path.join(old_pins, name))[:4] == want:
                shared.add(name)
        except OSError:
            pass
    for group in SHARED_TOGETHER:
        if not shared.issuperset(group):
            shared.difference_update(group)
    host.make_dirs(staging)
    for name in sorted(shared):
        fd = libbpf.obj_get(os.path.join(old_pins, name))
        try:
            libbpf.obj_pin(fd, os.path.join(staging, name))
        finally:
            os.close(fd)
    return sorted(shared)


class LoadError(Exception):
    """bcc could not compile the data path, or the kernel refused to load it
    (bcc has printed clang's or the verifier's words on stderr)."""


class Datapath:
    """The programs compiled and loaded, their maps pinned under pins."""

    def __init__(self, pins, syncache_max=65536, conntrack=False, defines=(), cookies="synguard"):
        from bcc import BPF

        self.pins = pins
        self.conntrack = conntrack
        self.cookies = cookies
        defines = tuple(defines) + tuple(d for d in compat_defines() if d not in defines)
        pin_here = not bcc_makes_pins()
        if pin_here:
            defines += ("SG_COMPAT_PINS",)
        host.make_dirs(pins)
        host.raise_memlock()
        try:
            self.bpf = BPF(
                text=source_text().encode(), cflags=cflags(pins, syncache_max, conntrack, defines, cookies)
            )
        except Exception as e:  # bcc raises plain Exception
            raise LoadError("bcc could not compile the data path (%s)" % e) from e
        try:
            self.xdp_fd = self.bpf.load_func(XDP_PROG.encode(), BPF.XDP).fd
            self.timer_fd = self.bpf.load_func(TIMER_PROG.encode(), BPF.SCHED_CLS).fd
            self.tc_fd = kfunc.load(self.bpf, TC_PROG, BPF.SCHED_CLS)
        except (Exception, kfunc.KfuncError) as e:
            self.bpf.cleanup()
            raise LoadError("the kernel refused the data path: %s" % e) from e
        try:
            for name in maps.declared() if pin_here else ():
                libbpf.obj_pin(self.bpf.get_table(name.encode()).map_fd, os.path.join(pins, name))
        except OSError as e:
            self.close()
            raise LoadError("cannot pin the maps: %s" % e) from e
        self.ids = {XDP_PROG: libbpf.prog_id(self.xdp_fd), TC_PROG: libbpf.prog_id(self.tc_fd)}

    def open_maps(self):
        return Maps(self.pins)

    def pin_programs(self):
        for name, fd in ((XDP_PROG, self.xdp_fd), (TC_PROG, self.tc_fd), (TIMER_PROG, self.timer_fd)):
            libbpf.obj_pin(fd, os.path.join(self.pins, PROG_PINS[name]))

    def close(self):
        if TC_PROG.encode() not in self.bpf.funcs:  # loaded by libbpf (kfunc.load), not bcc
            os.close(self.tc_fd)
        self.bpf.cleanup()


class Pinned:
    """A data path from its pins: the programs (as built() left them, or
    left attached by a controller that is gone) and their maps, nothing
    compiled."""

    def __init__(self, pins):
        self.pins = pins
        fds = []
        try:
            for name in PROG_PINS:
                fds.append(libbpf.obj_get(os.path.join(pins, PROG_PINS[name])))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.xdp_fd, self.tc_fd, self.timer_fd = fds
        self.ids = {XDP_PROG: libbpf.prog_id(self.xdp_fd), TC_PROG: libbpf.prog_id(self.tc_fd)}

    def open_maps(self):
        return Maps(self.pins)

    def close(self):
        for fd in (self.xdp_fd, self.tc_fd, self.timer_fd):
            os.close(fd)


def build(pins, syncache_max, conntrack, cookies="synguard"):
    """Compile, load and pin the data path under pins in a child process
    (its compiler messages go to our stderr); returns it as Pinned."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "synguard.datapath",
            pins,
            str(syncache_max),
            "1" if conntrack else "0",
            cookies,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0:
        raise LoadError(r.stdout.strip() or "building the data path failed (exit %d)" % r.returncode)
    return Pinned(pins)


def _build_main(argv):
    """The child's side of build(): the reason on stdout if it fails."""
    pins, syncache_max, conntrack, cookies = argv
    try:
        dp = Datapath(pins, int(syncache_max), conntrack == "1", cookies=cookies)
    except LoadError as e:
        print(e)
        return 1
    dp.pin_programs()
    dp.close()
    return 0


if __name__ == "__main__":
    sys.exit(_build_main(sys.argv[1:]))
