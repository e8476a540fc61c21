"""Log lines the journal can rank: sd-daemon priority prefixes.

Under systemd, stderr is a stream to journald, which reads a leading
"<N>" (syslog priority N) off each line and files the line under it
(SyslogLevelPrefix=yes, the default). Without a prefix every line is
"info", so `journalctl -p err` would never show an error. So when stderr
is the journal (JOURNAL_STREAM names its device and inode, as systemd
sets it), each line gets <3> for errors, <4> warnings, <6> info; on a
terminal or a pipe the lines stay as they were.
"""

import logging
import os
import sys

# logging level -> syslog priority (sd-daemon.h: SD_ERR is <3>, ...)
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
ERR = 3


def is_journal(stream=None):
    """True if stream (default sys.stderr) is the one JOURNAL_STREAM names."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def priority(levelno):
    """The syslog priority of a logging level (between two: the graver)."""
    for level in sorted(PRIORITIES, reverse=True):
        if levelno >= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.DEBUG]


class Formatter(logging.Formatter):
    """'synguard: MESSAGE', with '<N>' in front when journal is true."""

    def __init__(self, journal):
        super().__init__("synguard: %(message)s")
        self.journal = journal

    def format(self, record):
        line = super().format(record)
        if not self.journal:
            return line
        # A message of several lines: each gets the prefix, or journald
        # files the later ones as info.
        p = "<%d>" % priority(record.levelno)
        return "\n".join(p + part for part in line.split("\n"))


def setup(level=logging.INFO):
    """The synguard log to stderr, prefixed if stderr is the journal.
    Replaces whatever handlers the root logger had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(is_journal(sys.stderr)))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def error_line(message):
    """The one line a failed command ends with, on stderr."""
    line = "synguard: error: %s" % message
    return ("<%d>" % ERR + line) if is_journal(sys.stderr) else line
