"""What the process that runs the controller means by SIGTERM.

systemd stops a service with SIGTERM both for `systemctl stop` and for
the stop half of `systemctl restart` (also try-restart, reload-or-restart,
and a package upgrade's postinst): while it stops the unit for a restart,
the unit's job is a "restart" job (systemd turns it into a start job only
once the stop is done). A restart is told by that job, so that the
controller hands its data path to the one systemd starts next instead of
draining it (new SYNs to the kernel) and taking it off.
"""

import os
import subprocess


def own_unit(cgroup_file="/proc/self/cgroup"):
    """The systemd service this process runs in (synguard@eth0.service), or
    None outside one (a shell, a container): as the unit says it
    (Environment=SYNGUARD_UNIT=%n), else from the cgroup systemd made."""
    if os.environ.get("SYNGUARD_UNIT"):
        return os.environ["SYNGUARD_UNIT"]
    try:
        with open(cgroup_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def restarting(unit=None, timeout=2.0):
    """systemd stops unit (ours by default) to start it again: its job in
    `systemctl list-jobs` is a restart."""
    unit = unit or own_unit()
    if not unit:
        return False
    try:
        r = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # JOB UNIT TYPE STATE
    return any(
        fields[1:3] == [unit, "restart"] for fields in (line.split() for line in r.stdout.splitlines())
    )
