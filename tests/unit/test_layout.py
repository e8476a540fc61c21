"""controller/layout.py mirrors the C structs with ctypes: each mirror is
held to the type bcc derives from the C for the same map."""

import ctypes

import pytest
from synguard import layout
from synguard.maps import Maps


def fields(t):
    """{name: (offset, size)} of a ctypes struct, nested ones flattened."""
    out = {}
    for name, ftype in getattr(t, "_fields_", []):
        f = getattr(t, name)
        out[name] = (f.offset, f.size)
        for sub, (off, size) in fields(ftype).items():
            out["%s.%s" % (name, sub)] = (f.offset + off, size)
    return out


@pytest.mark.parametrize("name", list(Maps.LAYOUT))
def test_each_map_type_is_the_c_one(datapath, name):
    prog, _maps = datapath
    key, value, percpu = Maps.LAYOUT[name]
    table = prog.bpf[name.encode()]
    leaf = table.Leaf._type_ if percpu else table.Leaf  # bcc gives per-CPU values as an array
    assert ctypes.sizeof(table.Key) == ctypes.sizeof(key)
    assert ctypes.sizeof(leaf) == ctypes.sizeof(value)
    for mine, theirs in ((key, table.Key), (value, leaf)):
        if hasattr(mine, "_fields_"):
            got = fields(theirs)
            for field, where in fields(mine).items():
                if field.split(".")[-1] in ("pad", "reserved"):
                    continue
                assert got[field] == where, (name, field)


def test_the_timer_request_is_the_c_one(datapath):
    """struct sg_timer_req is no map's type: held to the C's offsets, which
    the source states (u64, u64, then u32 fields), and to the test run's
    frame limit with a full batch of keys."""
    assert [layout.TimerRequest.keys.offset, layout.TimerRequest.removed.offset] == [16, 24]
    assert ctypes.sizeof(layout.TimerRequest) + layout.TIMER_BATCH * ctypes.sizeof(layout.Flow) <= 3520


def test_design_describes_every_counter():
    """docs/DESIGN.md's counter table names exactly the counters of maps.h."""
    import os
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "DESIGN.md")) as f:
        rows = [line.split("|")[1] for line in f if line.startswith("| `")]
    assert set(re.findall(r"`(\w+)`", "".join(rows))) == set(layout.counter_names())


def test_every_c_file_says_its_license():
    for path in sorted(layout.bpf_dir().iterdir()):
        if path.suffix in (".c", ".h"):
            assert path.read_text().startswith("/* SPDX-License-Identifier: GPL-2.0-only */\n"), path.name
