"""What the commands share: the one-line errors and the exit codes they
stand for, the command record the registry lists, and finding a protected
interface's maps and running controller."""

import argparse
import glob
import json
import os
from dataclasses import dataclass, field

from .. import host, netlink
from ..maps import Maps
from ..options import UsageError
from ..runstate import RUN_DIR, RunState, controller_lock_held, pin_dir, valid_ifname

# The exit codes, for every command (--help and the man page print this).
OK, FAILED, BAD_INPUT = 0, 1, 2
EXIT_CODES = (
    (OK, "done; for status: IFACE is protected"),
    (FAILED, "IFACE is not protected (the reason on stderr), or a runtime failure"),
    (BAD_INPUT, "bad input, or refused: nothing was changed"),
)


class Failure(Exception):
    """A runtime failure the user can do something about: one line, exit 1."""


class NotProtected(Failure):
    """The interface has no data path of synguard's: exit 1, as status."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, the way every other error reads
        raise UsageError(message)


@dataclass
class Command:
    """One command: its name, one line about it, its synopsis (after
    `synguard NAME`), examples, its arguments and what runs it."""

    name: str
    summary: str
    synopsis: str
    examples: str
    arguments: object  # fn(parser): adds the command's arguments
    run: object  # fn(args) -> exit code
    host_mounts: bool = True  # joins the host's mounts first (pins are there)
    epilog: str = ""
    extra: dict = field(default_factory=dict)


IFACE_HELP = "the interface, by its name in this network namespace (eth0, bond0.100)"
JSON_HELP = "print everything as JSON (the text form leaves some of it out)"


def iface_argument(parser):
    parser.add_argument("iface", metavar="IFACE", help=IFACE_HELP)


def checked_iface(iface):
    if not valid_ifname(iface):
        raise UsageError("invalid interface name %r" % iface)
    return iface


def protected_elsewhere(ifname):
    """[(netns inode, pid)] of running controllers of an interface of this
    name in other network namespaces."""
    found = []
    for path in glob.glob(os.path.join(RUN_DIR, "*", glob.escape(ifname) + ".json")):
        nsid = os.path.basename(os.path.dirname(path))
        if nsid == str(host.netns_id()) or not controller_lock_held(path):
            continue
        try:
            with open(path) as f:
                found.append((nsid, json.load(f).get("pid")))
        except (OSError, ValueError, AttributeError):
            found.append((nsid, None))
    return found


def elsewhere_hint(ifname):
    hints = [
        "a controller (pid %s) protects %s in network namespace %s: run detach there "
        "(nsenter --net=/proc/%s/ns/net synguard detach %s)" % (pid, ifname, nsid, pid, ifname)
        for nsid, pid in protected_elsewhere(ifname)
    ]
    return "; ".join(hints)


def known_iface(iface):
    """iface, if it names an interface in this network namespace or one
    synguard still has a run state or pins for; else UsageError, with where
    else a controller protects an interface of that name. netlink, not
    /sys/class/net: after join_host_mounts /sys may be the host namespace's
    sysfs, which does not list this namespace's interfaces."""
    checked_iface(iface)
    if netlink.ifindex(iface) or RunState.load(iface) or os.path.isdir(pin_dir(iface)):
        return iface
    hint = elsewhere_hint(iface)
    raise UsageError(
        "no interface named %s in this network namespace%s" % (iface, "; " + hint if hint else "")
    )


def open_maps(iface):
    """The pinned maps of iface in this network namespace; NotProtected if
    there are none."""
    pins = pin_dir(known_iface(iface))
    if not os.path.isdir(pins):
        raise NotProtected("%s is not protected" % iface)
    return Maps(pins)


def controller_of(iface, command):
    """The run state of iface's running controller, in this PID namespace."""
    known_iface(iface)
    if os.geteuid() != 0:
        raise UsageError("%s needs root (CAP_BPF, CAP_NET_ADMIN)" % command)
    state = RunState.load(iface)
    if state is None or not os.path.isdir(pin_dir(iface)):
        raise NotProtected("%s is not protected" % iface)
    if not state.controller_alive():
        raise Failure(
            "no controller runs for %s (keys rotate only while one does): start attach, which adopts "
            "the data path" % iface
        )
    if state.phase != "protecting":
        raise Failure("attach on %s is still under way" % iface)
    if not state.same_pid_ns():
        raise UsageError(
            "the controller of %s runs in another PID namespace (a container?): run this there" % iface
        )
    return state
