"""The pinned maps of one protected interface, opened through libbpf, and
what the controller reads and writes in them."""

import ctypes

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
