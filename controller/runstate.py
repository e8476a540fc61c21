"""Where one protected interface's things live, and what attach put there.

Everything is keyed by network namespace (its inode, host.netns_id()) and
interface name, so that namespaces can each protect their own eth0:

    /sys/fs/bpf/synguard/NETNS/IFACE/   the maps and programs (pins; a dot
                                        in IFACE becomes ':', as bpffs wants)
    /run/synguard/NETNS/IFACE.json      the run state: what attach did
    /run/synguard/NETNS/IFACE.lock      held (flock) while a controller runs
    /run/synguard/NETNS/IFACE.takeover  a new controller's request that the
                                        running one hand the data path over

The lock tells whether the controller is alive without trusting a pid,
also from another PID namespace (a container) and after the pid is reused.
"""

import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field

from . import layout
from .host import make_dirs, netns_id

RUN_DIR = "/run/synguard"


def valid_ifname(name):
    # Interface names become part of paths and of a -D string for clang.
    return 0 < len(name) < 16 and all(c.isalnum() or c in "._-@" for c in name) and name not in (".", "..")


def pin_dir(ifname, netns=None):
    # bpffs refuses names with a dot (eth0.100); ':' is never in an interface name.
    return os.path.join(layout.PIN_ROOT, str(netns or netns_id()), ifname.replace(".", ":"))


def staging_dir(pins):
    """Where attach builds a new data path before it swaps it in."""
    return pins + ":new"


def state_path(ifname, netns=None):
    return os.path.join(RUN_DIR, str(netns or netns_id()), ifname + ".json")


def pid_ns():
    return os.stat("/proc/self/ns/pid").st_ino


@dataclass
class RunState:
    """What one `synguard attach` put on an interface (the run-state file)."""

    ifname: str
    ifindex: int
    netns: int
    pid: int
    mode: str
    ports: list
    rotate_seconds: float
    # attaching; protecting once XDP and tc are on; draining (stop: new SYNs
    # go to the kernel until drain_until); handover (the controller left the
    # data path protecting for the next one: a restart)
    phase: str = "attaching"
    xdp_prog_id: int = 0
    tc_prog_id: int = 0
    created_clsact: bool = False
    conntrack_built: bool = False  # the tc program can make conntrack entries
    metrics_addr: str = ""
    config: str = ""  # attach --config FILE as an absolute path; "" without one
    flag_settings: list = field(default_factory=list)  # settings given as flags: they win over config
    sysctls: dict = field(default_factory=dict)  # name: value before attach changed it
    source_hash: str = ""
    cookies: str = "synguard"  # datapath.COOKIE_MODES (resolved): whose cookies answer
    fw_insert: bool = False  # the firewall needs the conntrack entries (firewall.Plan)
    fw_noscale: bool = False  # ... and no window scale is offered
    drain_until: float = 0.0  # wall clock: the drain ends (phase draining)
    handover_at: float = 0.0  # wall clock: the controller left (phase handover)
    map_layouts: dict = field(default_factory=dict)  # map: layout signature (maps.signatures)
    pid_ns: int = field(default_factory=pid_ns)
    started: float = field(default_factory=time.time)

    @property
    def path(self):
        return state_path(self.ifname, self.netns)

    @property
    def pins(self):
        return pin_dir(self.ifname, self.netns)

    def save(self):
        make_dirs(os.path.dirname(self.path))
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, ifname):
        """The run state of ifname in this network namespace, or None."""
        try:
            with open(state_path(ifname)) as f:
                return cls(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self):
        _remove(self.path)

    def controller_alive(self):
        """A controller holds this interface's lock (this process counts)."""
        return controller_lock_held(self.path)

    def same_pid_ns(self):
        return self.pid_ns == pid_ns()


def _remove(path):
    """Remove a run-state file, its lock and any takeover request; True if
    the file was there."""
    for other in (_lock_path(path), path[: -len(".json")] + ".takeover"):
        try:
            os.unlink(other)
        except FileNotFoundError:
            pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    try:
        os.rmdir(os.path.dirname(path))  # the namespace's last interface
    except OSError:
        pass
    return True


def remove_state(ifname):
    return _remove(state_path(ifname))


def _lock_path(state_file):
    return state_file[: -len(".json")] + ".lock"


def takeover_path(ifname, netns=None):
    """Where a new controller asks the running one to hand over."""
    return state_path(ifname, netns)[: -len(".json")] + ".takeover"


class ControllerLock:
    """The controller's claim on an interface: an exclusive flock held for
    its lifetime, released by the kernel however the process ends."""

    def __init__(self, ifname):
        self.path = _lock_path(state_path(ifname))
        while True:
            make_dirs(os.path.dirname(self.path))
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the directory went meanwhile: the last one out removes it
                continue
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(self.fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise FileExistsError(
                        errno.EEXIST, "another synguard controller holds %s" % self.path
                    ) from None
                raise
            # Locked, but the file may have been removed meanwhile (drop()
            # by a controller whose attach failed): a lock on it is no lock.
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    return
            except FileNotFoundError:
                pass
            os.close(self.fd)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def drop(self):
        """Let go and remove the lock file (nothing of ours stays on the
        interface): removed while held, so no one else holds that file."""
        if self.fd >= 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.close()


def controller_lock_held(state_file):
    try:
        fd = os.open(_lock_path(state_file), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False
