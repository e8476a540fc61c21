"""The pinned maps of one protected interface, opened through libbpf, and
what the controller reads and writes in them; each map's layout signature,
by which a new data path knows which maps of a running one it can share."""

import ctypes
import hashlib
import re

from . import layout, libbpf


class Maps:
    """The pinned maps of one interface (maps.h)."""

    # name: (key type, value type, per-CPU)
    LAYOUT = {
        "secrets": (ctypes.c_uint32, layout.Secrets, False),
        "config": (ctypes.c_uint32, layout.Config, False),
        "listeners": (ctypes.c_uint32, ctypes.c_uint32, False),
        "counters": (ctypes.c_uint32, ctypes.c_uint64, True),
        "syncache": (layout.Flow, layout.SyncacheEntry, False),
        "syncache_state": (ctypes.c_uint32, layout.SyncacheState, False),
        "syncache_buckets": (ctypes.c_uint32, ctypes.c_uint32, False),
        "handoffs": (layout.Flow, layout.Handoff, False),
        "rexmt": (ctypes.c_uint32, layout.Rexmt, False),
        "verified": (layout.Addr, ctypes.c_uint64, False),
        "limited": (ctypes.c_uint32, layout.Limited, True),
    }

    def __init__(self, pins):
        self._all = []
        try:
            for name, (key, value, percpu) in self.LAYOUT.items():
                m = libbpf.PinnedMap("%s/%s" % (pins, name), key, value, percpu=percpu)
                self._all.append(m)
                setattr(self, name, m)
        except BaseException:
            self.close()
            raise

    def _slots(self):
        """Per-CPU totals of every slot: [0, 64) IPv4 or no family, then IPv6
        (one batch syscall)."""
        slots = [0] * (2 * layout.COUNTER_SLOTS)
        for keys, values, n in self.counters.batches():
            for k, v in zip(keys[:n], values[:n]):
                slots[k] = sum(v)  # simple ctypes come back as ints
        return slots

    def read_counters(self):
        """{name: total over CPUs and families}, read now (no cache)."""
        slots = self._slots()
        return {
            name: slots[i] + slots[i + layout.COUNTER_SLOTS] for i, name in enumerate(layout.counter_names())
        }

    def read_counters_by_family(self):
        """({name: n} of the family-less counters, {family: {name: n}})."""
        slots = self._slots()
        plain, families = {}, {"inet": {}, "inet6": {}}
        for i, name in enumerate(layout.counter_names()):
            if name in layout.FAMILYLESS:
                plain[name] = slots[i]
            else:
                families["inet"][name] = slots[i]
                families["inet6"][name] = slots[i + layout.COUNTER_SLOTS]
        return plain, families

    def add_counters(self, ipv6, **amounts):
        """Add to counters only the controller writes (no BPF program
        touches those slots, so read-modify-write is safe)."""
        names = layout.counter_names()
        for name, n in amounts.items():
            if n:
                idx = names.index(name) + (layout.COUNTER_SLOTS if ipv6 else 0)
                values = self.counters.lookup(idx)
                values[0].value += n
                per_cpu = (ctypes.c_uint64 * len(values))(*[v.value for v in values])
                self.counters.update(idx, per_cpu)

    def ports(self):
        """The protected ports (one batch syscall over the array)."""
        return sorted(
            k for keys, values, n in self.listeners.batches() for k, v in zip(keys[:n], values[:n]) if v
        )

    def set_ports(self, ports):
        """Protect exactly these ports (others are released)."""
        now = set(self.ports())
        for p in now - set(ports):
            self.listeners.update(p, ctypes.c_uint32(0))
        for p in set(ports) - now:
            self.listeners.update(p, ctypes.c_uint32(layout.PORT_PROTECTED))

    def close(self):
        for m in self._all:
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _describe(t):
    """A ctypes type as text: its name and size, and its fields, offsets and
    types all the way down."""
    if hasattr(t, "_fields_"):
        fields = ",".join(
            "%s@%d:%s" % (name, getattr(t, name).offset, _describe(ft)) for name, ft, *_ in t._fields_
        )
        return "%s(%d){%s}" % (t.__name__, ctypes.sizeof(t), fields)
    if hasattr(t, "_length_"):
        return "%s[%d]" % (_describe(t._type_), t._length_)
    return "%s(%d)" % (t.__name__, ctypes.sizeof(t))


def signature(name):
    """What a map of this name holds, as this version reads and writes it:
    two versions whose signatures agree can share the map itself."""
    key, value, percpu = Maps.LAYOUT[name]
    text = "%s|%s|%s|%s" % (name, _describe(key), _describe(value), percpu)
    if name == "counters":  # slots by position: the names are the layout
        text += "|" + ",".join(layout.counter_names())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def signatures():
    """{map name: signature} of every pinned map."""
    return {name: signature(name) for name in Maps.LAYOUT}


# struct bpf_map_info's map types, for the maps.h declarations.
MAP_TYPES = {"hash": 1, "array": 2, "percpu_array": 6, "lru_hash": 9}


def declared():
    """{map name: (bpf map type, max_entries)} from maps.h's pinned maps;
    max_entries None where the loader sets it (the syncache's)."""
    out = {}
    for kind, name, size in re.findall(
        r'BPF_TABLE_PINNED\("(\w+)",[^,]+,[^,]+,\s*(\w+),\s*([^,]+),\s*SG_PIN_DIR',
        layout.bpf_source("maps.h"),
    ):
        entries = 1
        for factor in size.split("*"):  # N, SG_NAME or N * SG_NAME
            factor = factor.strip()
            if factor == "SG_SYNCACHE_MAX":
                entries = None
                break
            entries *= int(factor) if factor.isdigit() else layout.constant("maps.h", factor)
        out[name] = (MAP_TYPES[kind], entries)
    return out
