"""The host around the data path: sysctls, bpffs, namespaces.

What synguard reads of the host and the little it changes: a sysctl it
sets while attached (and sets back on detach), bpffs where it is missing,
and, when started by `ip netns exec`, the mount namespace it pins in.
Everything here acts in the calling thread's network namespace
(/proc/sys/net and /proc/thread-self follow it).
"""

import ctypes
import errno
import os
import resource

BPF_FS_MAGIC = 0xCAFE4A11
BPFFS = "/sys/fs/bpf"
CLONE_NEWNS = 0x00020000

_libc = ctypes.CDLL(None, use_errno=True)


def _sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctl(name, default=None):
    """The sysctl's value split into words, or default if there is none."""
    try:
        with open(_sysctl_path(name)) as f:
            return f.read().split()
    except OSError:
        return default


def write_sysctl(name, value):
    with open(_sysctl_path(name), "w") as f:
        f.write(value)


class SysctlRefused(OSError):
    """A sysctl attach needs cannot be written here (a container's
    read-only /proc/sys): strerror is the whole line, saying what to do."""


def set_sysctl(name, value, changed):
    """Set sysctl name to value while attached, recording in `changed`
    ({name: value before}, the run state's) what detach sets back. A no-op
    when it already has that value. SysctlRefused if /proc/sys is read-only
    or not ours to write (containers)."""
    before = read_sysctl(name)
    if before is None or before == [value]:
        return False
    try:
        write_sysctl(name, value)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise SysctlRefused(
            e.errno,
            "cannot set %s=%s (%s: a container's /proc/sys?): set it on the host first "
            "(sysctl -w %s=%s, and in /etc/sysctl.d to keep it), or run synguard privileged"
            % (name, value, os.strerror(e.errno), name, value),
        ) from None
    changed.setdefault(name, " ".join(before))
    return True


def restore_sysctls(changed):
    """Set back what set_sysctl changed; returns ['name=value', ...]."""
    done = []
    for name, value in changed.items():
        try:
            write_sysctl(name, value)
            done.append("%s=%s" % (name, value))
        except OSError:
            pass  # the namespace is gone, or the module was unloaded
    return done


def netns_id():
    """The network namespace's inode, as `stat -L /proc/self/ns/net` shows
    it: what pins and run state are keyed by, so that two namespaces may
    each protect their own eth0."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def fs_magic(path):
    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    buf = StatFs()
    if _libc.statfs(path.encode(), ctypes.byref(buf)) != 0:
        return 0
    return buf.f_type & 0xFFFFFFFF


def _mount_ns(pid):
    try:
        return os.stat("/proc/%s/ns/mnt" % pid).st_ino
    except OSError:
        return None


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _outer_mounts():
    """The nearest ancestor process in another mount namespace (the shell
    that ran `ip netns exec`), else PID 1; None if none can be seen."""
    own, pid = _mount_ns("self"), os.getppid()
    while pid > 1:
        ns = _mount_ns(pid)
        if ns is None:
            break
        if ns != own:
            return pid
        pid = _parent(pid)
    return 1 if _mount_ns(1) not in (None, own) else None


def join_host_mounts():
    """`ip netns exec` runs a command in a mount namespace of its own, with a
    fresh /sys and a fresh bpffs on /sys/fs/bpf: pins made there are gone
    when the command ends, and a later `synguard status` would never find
    them. So when this process's /sys/fs/bpf is not the one of the mount
    namespace around it (its nearest ancestor in another one: the shell
    that ran `ip netns exec`), enter that one, staying in the same
    directory; there the pins are where every command sees them. Must run
    while the process has one thread. Returns True if it moved; OSError if
    it could not (that needs CAP_SYS_ADMIN). Where no such ancestor can be
    seen (a service with few capabilities, a container) nothing is done."""
    pid = _outer_mounts()
    if pid is None:
        return False
    try:
        if os.stat(BPFFS).st_dev == os.stat("/proc/%d/root%s" % (pid, BPFFS)).st_dev:
            return False
    except OSError:
        return False
    cwd = os.getcwd()
    fd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "cannot enter the mount namespace around it: %s" % os.strerror(err))
    finally:
        os.close(fd)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    return True


def make_dirs(path, mode=0o755):
    """os.makedirs(path), again where a detach (another interface's, or in
    another namespace) removed an empty parent between two of its steps:
    the directories under /run/synguard and the pin root are shared, and
    the last one out removes them."""
    for _ in range(10):
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    os.makedirs(path, mode=mode, exist_ok=True)


def raise_memlock():
    """Linux < 5.11 charges BPF maps and programs to RLIMIT_MEMLOCK (later
    ones to the memory cgroup): no limit where CAP_SYS_RESOURCE allows
    (root in a shell), else the soft limit up to the hard one, which needs
    no privilege (the unit sets both to infinity)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))


def ensure_bpffs(root=BPFFS):
    """Mount bpffs at root if it is not there (many hosts never mount it)."""
    if fs_magic(root) == BPF_FS_MAGIC:
        return False
    os.makedirs(root, exist_ok=True)
    if _libc.mount(b"bpf", root.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount bpffs at %s: %s" % (root, os.strerror(err)))
    return True


def listener_of(port):
    """(pid, name) of a process with a TCP socket listening on port in this
    network namespace, or None where none can be seen (another PID
    namespace's, say)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add("socket:[%s]" % fields[9])
    for pid in (p for p in os.listdir("/proc") if p.isdigit()) if inodes else ():
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
            if any(os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes for fd in fds):
                with open("/proc/%s/comm" % pid) as f:
                    return int(pid), f.read().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None
