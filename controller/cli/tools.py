"""The commands that need no protected interface: keygen, ebpf."""

import os

from .. import datapath, fleet, layout
from ..options import UsageError
from ..runstate import pin_dir
from .common import Command


def cmd_keygen(args):
    """A new master key in a file only root can read; never overwrites."""
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            "%s already exists%s: keygen never overwrites" % (args.file, _what_is(args.file))
        ) from None
    except OSError as e:
        raise UsageError("cannot create %s: %s" % (args.file, e.strerror)) from None
    with os.fdopen(fd, "w") as f:
        f.write(fleet.generate())
    print(
        "synguard: wrote a new fleet master key to %s (mode 0600): copy it to every host of the fleet"
        % args.file
    )
    return 0


def _what_is(path):
    import stat

    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISLNK(mode):
        return " (a symlink%s)" % ("" if os.path.exists(path) else ", dangling")
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return " (%s)" % name
    return ""


def cmd_ebpf(args):
    flags = datapath.cflags(
        pin_dir("IFACE"), layout.syncache_map_size(layout.SYNCACHE_DEFAULTS["cachelimit"])
    )
    print("// cflags: %s" % " ".join(flags))
    print("// with the kernel's cookies (--cookies kernel) also -DSG_KERNEL_COOKIES")
    print(datapath.source_text())
    return 0


def keygen_arguments(k):
    k.add_argument("file", metavar="FILE", help="the key file to create (it must not exist)")


COMMANDS = [
    Command(
        "keygen",
        "write a new fleet master key file (mode 0600; never overwrites)",
        "FILE",
        """  sudo synguard keygen /etc/synguard/fleet.key
  sudo install -m 0600 /etc/synguard/fleet.key /mnt/other-host/etc/synguard/""",
        keygen_arguments,
        cmd_keygen,
        host_mounts=False,
    ),
    Command(
        "ebpf",
        "print the C that attach compiles, with its cflags",
        "",
        "  synguard ebpf | less",
        lambda parser: None,
        cmd_ebpf,
        host_mounts=False,
    ),
]
