"""`synguard set IFACE NAME=VALUE --save`: the settings written into the
config file the controller was started with, every other line and comment
as it was.

The edit is textual (a value replaced in its line, its comment kept in
its column; a missing key added at the end of [settings]; a missing
[settings] table added at the end), and then checked: the new text must
read back as exactly the old file with those settings changed, and be a
file attach accepts. Anything else (a file that does not parse, a layout
the edit cannot handle, such as dotted keys or an inline table) is a
ValueError naming the file, and nothing is written.

Writing is in two steps so that `set` can put the live change between
them: prepare() writes the new text to a temporary file beside the config
(same mode and owner) and syncs it, which is where a read-only or full
file system fails; commit() renames it over the config (atomic), or
discard() removes it.
"""

import os
import re
import tempfile
from dataclasses import dataclass

from . import configfile, layout, settings
from .configfile import tomllib
from .files import FileError, read_text
from .formats import num
from .settings import SETTINGS

_TABLE = re.compile(r"\s*\[")  # a table header: [name] or [[name]]
_SETTINGS = re.compile(r"\s*\[\s*(settings|\"settings\"|'settings')\s*\]\s*(#.*)?$")
_KEY = re.compile(
    r"(?P<pre>\s*(?P<key>[A-Za-z0-9_-]+|\"[^\"\\]*\"|'[^']*')\s*=\s*)"
    r"(?P<value>[^\s#]+)(?P<gap>\s*)(?P<comment>#.*)?$"
)


def literal(name, raw):
    """The TOML text of a setting's raw sg_config value, in its own units."""
    return num(SETTINGS[name].show(raw))


def edit(text, values):
    """text with [settings] NAME = LITERAL for each of values ({name: literal}).
    Returns the new text; the caller checks it (check())."""
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start = next((i for i, line in enumerate(lines) if _SETTINGS.match(line)), None)
    todo = dict(values)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
        last = start  # the table's last key line: new keys go after it
        for i in range(start + 1, end):
            body = lines[i].rstrip("\r\n")
            m = _KEY.match(body)
            if not m:
                continue
            last = i
            key = m["key"].strip("\"'")
            if key not in todo:
                continue
            new = todo.pop(key)
            gap = m["gap"]
            if m["comment"]:  # keep the comment's column where there is room
                gap = " " * max(1, len(gap) - (len(new) - len(m["value"])))
            lines[i] = m["pre"] + new + gap + (m["comment"] or "") + lines[i][len(body) :]
        if todo:
            if not lines[last].endswith(("\n", "\r")):
                lines[last] += eol
            added = ["%s = %s%s" % (k, v, eol) for k, v in todo.items()]
            lines[last + 1 : last + 1] = added
    elif todo:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += eol
        lines += [eol, "[settings]" + eol] + ["%s = %s%s" % (k, v, eol) for k, v in todo.items()]
    return "".join(lines)


def check(path, old_text, new_text, values):
    """ValueError unless new_text reads as old_text with values set, and
    attach would take it."""
    old = tomllib.loads(old_text)
    want = {**old, "settings": {**old.get("settings", {})}}
    for name, lit in values.items():
        want["settings"][name] = tomllib.loads("v = " + lit)["v"]
    try:
        got = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        got = None
    if got != want:
        raise ValueError(
            "cannot change [settings] in %s in place (dotted keys or an inline table?): "
            "edit it by hand" % path
        )
    conf = configfile.loads(new_text, path)
    try:
        settings.check({**layout.SETTING_DEFAULTS, **conf.get("settings", {})})
    except ValueError as e:
        raise ValueError("%s would then say: %s" % (path, e)) from None


@dataclass
class Pending:
    """A new text written beside the config file, not yet in its place."""

    path: str  # the config file as the run state names it
    target: str  # where it really is (a symlink is kept)
    old_text: str
    tmp: str
    values: dict  # name: the literal written

    def commit(self):
        """Rename the new text over the config. ValueError (one line) if that
        fails or if the file changed since prepare() read it; the config is
        as it was then, and the new text is left for discard()."""
        try:
            now, _ = read_text(self.target, "config file")
        except FileError as e:
            raise ValueError(str(e)) from None
        if now != self.old_text:
            raise ValueError("%s changed while synguard was saving into it: try again" % self.path)
        try:
            os.replace(self.tmp, self.target)
        except OSError as e:
            raise ValueError("cannot write %s: %s" % (self.path, e.strerror)) from None
        try:
            fd = os.open(os.path.dirname(self.target), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # renamed; only its durability across a crash is unsure

    def discard(self):
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def prepare(path, values):
    """Pending for saving values ({name: literal}) into the config file at
    path. ValueError (one line, naming the file) if it cannot be read,
    parsed, edited or written; nothing is left behind then."""
    try:
        old_text, st = read_text(path, "config file")
    except FileError as e:
        raise ValueError(str(e)) from None
    configfile.loads(old_text, path)  # the file as it is now must be one attach takes
    new_text = edit(old_text, values)
    check(path, old_text, new_text, values)
    target = os.path.realpath(path)
    directory, base = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".synguard-save", dir=directory)
    except OSError as e:
        raise ValueError("cannot write %s: %s" % (path, e.strerror)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        os.unlink(tmp)
        raise ValueError("cannot write %s: %s" % (path, e.strerror)) from None
    return Pending(path, target, old_text, tmp, dict(values))
