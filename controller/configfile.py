"""`synguard attach --config FILE`: everything the flags say, in TOML.

    ports = [80, 443]            # or "80,443,8000-8010"
    mode = "auto"                # auto | native | generic
    rotate_seconds = 16
    metrics_addr = "127.0.0.1:9717"
    metrics = true               # false: no metrics endpoint
    force = false
    fleet_key = "/etc/synguard/fleet.key"   # fleet mode (controller/fleet.py)
    conntrack = "auto"           # auto | noscale | off (controller/firewall.py)
    cookies = "auto"             # auto | synguard | kernel (controller/datapath.py)

    [settings]                   # the seed's sysctls and the reflection limit
    cachelimit = 15360           # (synguard set NAME=VALUE at run time)
    rexmtlimit = 3

Flags given on the command line win over the file. Unknown keys, wrong types
and values out of range are errors (ValueError with the file and the key).
"""

try:  # the standard library's from Python 3.11; before it, tomli (its origin)
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

from .files import FileError, read_text
from .settings import SETTINGS, parse_assignments

ATTACH_KEYS = {
    "ports": (list, str, int),
    "mode": (str,),
    "rotate_seconds": (int, float),
    "metrics_addr": (str,),
    "metrics": (bool,),
    "force": (bool,),
    "fleet_key": (str,),
    "conntrack": (str,),
    "cookies": (str,),
}


def load(path):
    """{key: value} for attach, with the settings table as 'settings':
    {sg_config field: raw value}."""
    try:
        text, _ = read_text(path, "config file")
    except FileError as e:
        raise ValueError(str(e)) from None
    return loads(text, path)


def loads(text, path):
    """load() of a config file's text; path is how errors name it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError("%s is not valid TOML: %s" % (path, e)) from None
    out = {}
    for key, value in data.items():
        if key == "settings":
            out["settings"] = _settings(value, path)
        elif key in ATTACH_KEYS:
            out[key] = _attach_key(key, value, path)
        else:
            raise ValueError(
                "%s: unknown key %r (known: %s, [settings])" % (path, key, ", ".join(ATTACH_KEYS))
            )
    return out


def _settings(table, path):
    """[settings] -> {sg_config field: raw value}, each checked as `set`
    checks it."""
    if not isinstance(table, dict):
        raise ValueError("%s: [settings] must be a table" % path)
    for name, v in table.items():
        if name not in SETTINGS:
            raise ValueError("%s: unknown key settings.%s (known: %s)" % (path, name, ", ".join(SETTINGS)))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("%s: settings.%s must be a number" % (path, name))
    try:
        return parse_assignments((name, str(v)) for name, v in table.items())
    except ValueError as e:
        raise ValueError("%s: settings.%s" % (path, e)) from None


def _attach_key(key, value, path):
    types = ATTACH_KEYS[key]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ValueError(
            "%s: %s must be %s, not %s" % (path, key, EXPECTED.get(key, "a string"), _kind(value))
        )
    if key == "ports" and isinstance(value, list):
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            raise ValueError("%s: ports must be whole numbers" % path)
        value = ",".join(map(str, value))
    elif key == "ports" and isinstance(value, int):
        value = str(value)  # ports = 80
    return value


# What a key takes, where its type alone would not say it.
EXPECTED = {
    "ports": 'a port, a list of ports or a string ("80,443,8000-8010")',
    "rotate_seconds": "a number of seconds",
    "metrics": "true or false",
    "force": "true or false",
}


def _kind(value):
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "a " + type(value).__name__
    )
