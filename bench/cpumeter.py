"""CPU time of chosen processes, with the packet processing they did.

A benchmark's client, server and daemon go into a cgroup of their own; the
meter reads the CPU time the scheduler charged to it (cgroup v1 cpuacct, or
cgroup v2's cpu.stat) plus that of every ksoftirqd thread. On veth (and on
loopback) a frame sent is received in the sender's own context: the
receive side's softirq, XDP, tc and TCP run on the sending task and are
charged to it, except what the kernel defers to ksoftirqd, which is why
that is added. Kernels built with CONFIG_IRQ_TIME_ACCOUNTING charge softirq
time to no task: there the figure leaves out the work done in softirq, and
`Meter.irq_time_accounting` says so.

Other work on the machine is not counted, except what it sends through
ksoftirqd; floods sent by processes outside the cgroup are charged to them.
"""

import gzip
import os
import secrets

HZ = os.sysconf("SC_CLK_TCK")


class MeterError(Exception):
    pass


def _cgroup_mount():
    """("v1", path of the cpuacct hierarchy) or ("v2", path of the unified
    one)."""
    v1 = v2 = None
    with open("/proc/mounts") as f:
        for line in f:
            _dev, path, fstype, opts = line.split()[:4]
            if fstype == "cgroup" and "cpuacct" in opts.split(","):
                v1 = path
            elif fstype == "cgroup2":
                v2 = path
    if v1:
        return "v1", v1
    if v2:
        return "v2", v2
    raise MeterError("no cgroup hierarchy with CPU accounting is mounted")


def _ksoftirqd_ticks():
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm.startswith("ksoftirqd/"):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def _irq_time_accounting():
    for path in ("/proc/config.gz", "/boot/config-%s" % os.uname().release):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                return "CONFIG_IRQ_TIME_ACCOUNTING=y" in f.read()
        except OSError:
            continue
    return None  # unknown


class Meter:
    """A cgroup made for the run (removed by close()); add(pid) moves a
    process in (its later children follow), read() is CPU seconds so far."""

    def __init__(self):
        self.kind, mount = _cgroup_mount()
        self.path = os.path.join(mount, "sgbench-%s" % secrets.token_hex(3))
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise MeterError("cannot make a cgroup in %s: %s" % (mount, e.strerror)) from None
        self.irq_time_accounting = _irq_time_accounting()

    def add(self, pid):
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except ProcessLookupError:
            pass  # it has exited already

    def read(self):
        if self.kind == "v1":
            with open(os.path.join(self.path, "cpuacct.usage")) as f:
                charged = int(f.read()) / 1e9
        else:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                usage = dict(line.split() for line in f)
            charged = int(usage["usage_usec"]) / 1e6
        return charged + _ksoftirqd_ticks() / HZ

    def close(self):
        """Remove the cgroup; processes still in it go back to the root."""
        root = os.path.dirname(self.path)
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                try:
                    with open(os.path.join(root, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            os.rmdir(self.path)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
