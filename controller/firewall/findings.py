"""Will connections that synguard hands off pass this namespace's firewall?

synguard answers SYNs at XDP, so netfilter never sees a protected connection's
SYN: the first packet it sees is the client's ACK.  What conntrack makes of that
ACK depends on how synguard runs:

  mode "loose"   nf_conntrack_tcp_loose=1 (the default), no entry inserted:
                 the ACK is ct state new (conntrack picks the flow up mid-stream)
  mode "strict"  nf_conntrack_tcp_loose=0, no entry inserted: ct state invalid
  mode "insert"  synguard inserted the conntrack entry from tc: ct state
                 established, exactly like a kernel-handled connection's ACK

check() walks (walk.py) the base chains with that ACK in each mode, for
IPv4 and IPv6 and each protected port, and reports the rules that treat it
differently from a connection the kernel handled itself (its SYN as ct
state new, its ACK as ct state established).

The rule sets in tests/unit/firewall/ were each loaded into a namespace and a
bare ACK sent through them: this check's certain verdicts matched what the
kernel did in every case (IPv4 and IPv6, loose=0 and 1). The package's
__init__ turns the findings into what attach does.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .legacy import legacy_findings
from .nft import KINDS, MAX_PATHS, MODE_STATE, MODES, TCP_FLAGS, Finding
from .walk import Path, Pkt, Ruleset, TooMany, U, Walker


def _static_match(rs: Ruleset, r, pkt: Pkt, state: str) -> object:
    """Do a rule's matches (limits ignored) hold for pkt in ct state `state`?"""
    w = Walker(rs, dataclasses.replace(pkt, state=state), True)
    w.family, w.table = r["family"], r["table"]
    resolved = w._resolve_xt(r)
    res = True
    for i, x in enumerate(r.get("expr", [])):
        if "match" in x:
            m = w.match(x["match"], Path())
            if m is False:
                return False
            if m is U:
                res = U
        elif "xt" in x and x["xt"].get("name") in ("conntrack", "state"):
            if i in resolved:
                op, names = resolved[i]
                if (state in names) != (op == "in"):
                    return False
            else:
                res = U
    return res


def _comparable(assumptions, actor) -> frozenset:
    """Assumptions as compared between a baseline path and a hand-off path.

    An unresolved xt conntrack match is one unknown per ct state ("does it match
    invalid?" is not "does it match new?") on the rule being judged, but on the
    rules before it, only "whatever let the packet get here": there the state
    tag is dropped."""
    out = set()
    for (uid, i, tag), val in assumptions:
        if tag.startswith("ct:") and uid != actor:
            tag = "ct"
        out.add(((uid, i, tag), val))
    return frozenset(out)


def _decides(r) -> bool:
    """Does the rule end in a verdict that a limit in it would gate?"""
    for x in r.get("expr", []):
        k = next(iter(x))
        if k in ("accept", "drop", "reject", "jump", "goto", "vmap", "synproxy"):
            return True
        if k == "xt" and x["xt"].get("type") == "target" and x["xt"].get("name") in ("REJECT", "SYNPROXY"):
            return True
    return False


class _Findings:
    """What one check found, merged by rule: a rule reached for IPv4 and
    IPv6, or in two modes, is one finding."""

    def __init__(self, rs: Ruleset):
        self.rs = rs
        self.rules = {
            (r["family"], r["table"], r["chain"], r["handle"]): r for ch in rs.order for r in ch.rules
        }
        self.found: dict = {}

    def rule(self, uid):
        return self.rules[uid]

    def add(self, kind, uid, ch, hook, ipv, modes=(), certain=True, note=""):
        """A finding at rule uid, or at chain ch's policy when uid is None."""
        if uid is not None:
            key = (kind,) + uid
            family, table, chain, handle = uid
            rule = self.rs.rule_text(self.rules[uid])
        else:
            key = (kind, ch.family, ch.table, ch.name, None)
            family, table, chain, handle = ch.family, ch.table, ch.name, None
            rule = f"policy {ch.policy}"
        f = Finding(
            kind=kind,
            table=table,
            chain=chain,
            hook=hook or "",
            handle=handle,
            rule=rule,
            family=family,
            ipv=(ipv,),
            modes=tuple(modes),
            certain=certain,
            note=note,
        )
        self.merge(key, f)

    def merge(self, key, f):
        old = self.found.get(key)
        if old is None:
            self.found[key] = f
            return
        self.found[key] = dataclasses.replace(
            old,
            ipv=tuple(sorted(set(old.ipv) | set(f.ipv))),
            modes=tuple(m for m in MODES if m in set(old.modes) | set(f.modes)),
            certain=old.certain and f.certain,
            note=old.note or f.note,
        )

    def sorted(self, extra=()):
        order = {k: i for i, k in enumerate(KINDS)}
        out = list(self.found.values()) + list(extra)
        return sorted(out, key=lambda f: (order[f.kind], f.family, f.table, f.chain, f.handle or 0))


def _baseline(rs, ipv, port, ifname):
    """The paths of a kernel-handled connection's SYN (ct state new) and
    ACK (established), or None when every path drops the SYN: the port is
    closed whatever synguard does."""
    base = []
    for flags, state in ((TCP_FLAGS["syn"], "new"), (TCP_FLAGS["ack"], "established")):
        walked = Walker(rs, Pkt(ipv, flags, port, state, ifname), True).walk()
        if state == "new" and all(o[0] == "drop" for _, o, _, _ in walked):
            return None
        base.extend(walked)
    return base


def _kernel_drops_too(base, path, out, ch):
    """A kernel-handled connection is dropped by the same rule (or policy),
    on a path that assumes no more than this one."""
    actor = out[1]
    mine = _comparable(path.assumptions, actor)
    return any(
        bo[0] == "drop"
        and bo[1] == actor
        and (actor is not None or bch is ch)
        and _comparable(bp.assumptions, actor) <= mine
        for bp, bo, bch, _ in base
    )


def _events(found, rs, path, hook, ipv, mode, pkt):
    """What a path met on the way: a notrack, a limit on ct state new."""
    for ev, uid, certain in path.events:
        if ev == "notrack":
            note = "" if certain else "xt target CT: --notrack or another CT option"
            found.add("notrack", uid, None, "prerouting", ipv, (), certain, note)
        elif ev == "limit" and mode == "loose":
            r = found.rule(uid)
            est = _static_match(rs, r, pkt, "established")
            if est is not True and _decides(r):
                note = "" if est is False else "whether it applies to ct state new is not shown"
                certain = est is False and not path.uncertain
                found.add("new_accept_limit", uid, None, hook or "input", ipv, (), certain, note)


def _ending(found, base, path, out, ch, hook, ipv, mode, alone):
    """How a path of the hand-off's ACK ends, where a kernel-handled
    connection's does not: into synproxy, or dropped."""
    if out[0] == "synproxy":
        note = "" if not path.uncertain else "xt conntrack/state matches on the path"
        found.add("synproxy", out[1], ch, hook, ipv, (mode,), not path.uncertain, note)
        return
    if out[0] != "drop" or mode == "insert":
        return  # insert: the same packet as a kernel-handled connection's ACK
    if _kernel_drops_too(base, path, out, ch):
        return  # a kernel-handled connection is dropped there too
    kind = "new_not_syn_drop" if mode == "loose" else "invalid_drop"
    note = ""
    if path.uncertain:
        note = "the path uses xt conntrack/state matches, whose states the JSON lacks"
    elif not alone:
        note = "only for some packets (conditions the check cannot evaluate)"
    if path.untracked:
        note = (note + "; " if note else "") + "the port is untracked"
    found.add(kind, out[1], ch, hook, ipv, (mode,), alone and not path.uncertain, note)


def _judge(found, rs, base, ipv, port, mode, ifname):
    """The hand-off's ACK in one mode, against the kernel's baseline."""
    pkt = Pkt(ipv, TCP_FLAGS["ack"], port, MODE_STATE[mode], ifname)
    paths = Walker(rs, pkt, False).walk()
    ends = {
        (o[0], o[1], c.name if c else None)
        for p, o, c, _ in paths
        if not (o[0] == "drop" and _kernel_drops_too(base, p, o, c))
    }
    for path, out, ch, hook in paths:
        _events(found, rs, path, hook, ipv, mode, pkt)
        _ending(found, base, path, out, ch, hook, ipv, mode, alone=len(ends) == 1)


def check(
    ruleset: dict,
    ports: Iterable[int],
    *,
    ifname: str | None = None,
    nft_text: str | None = None,
    legacy: dict | None = None,
    families: Iterable[str] = ("ipv4", "ipv6"),
) -> list[Finding]:
    """Findings for the rules that matter to connections handed off on `ports`.

    ruleset   parsed `nft -j list ruleset`
    ports     the protected TCP ports
    ifname    the interface synguard protects (else iifname matches are unknown)
    nft_text  optional `nft -a list ruleset` output: resolves xt matches the JSON
              shows only by name (-m conntrack / -m state, -j CT)
    legacy    optional dict from read_legacy(): iptables-legacy tables
    """
    rs = Ruleset(ruleset, nft_text)
    found = _Findings(rs)
    try:
        for ipv in families:
            for port in ports:
                base = _baseline(rs, ipv, port, ifname)
                if base is None:
                    found.merge(
                        ("port_closed", port),
                        Finding(
                            kind="port_closed",
                            table="",
                            chain="",
                            hook="",
                            handle=None,
                            rule=f"tcp dport {port}",
                            ipv=(ipv,),
                            note="the firewall drops kernel-handled SYNs to this port as well",
                        ),
                    )
                    continue
                for mode in MODES:
                    _judge(found, rs, base, ipv, port, mode, ifname)
    except TooMany:
        found.found[("unknown",)] = Finding(
            "unknown", "", "", "", None, "", note=f"more than {MAX_PATHS} paths"
        )
    return found.sorted(legacy_findings(legacy) if legacy else ())


# What the client's ACK is to conntrack in each mode, for the lines that say why.
STATE_NOTES = {
    "loose": "handed-off ACKs are ct state new (nf_conntrack_tcp_loose=1)",
    "strict": "handed-off ACKs are ct state invalid (nf_conntrack_tcp_loose=0)",
    "insert": "synguard inserts their conntrack entries",
}


def refusal(findings: list[Finding], mode: str) -> str | None:
    """The one line attach prints when it refuses, or None."""
    why = STATE_NOTES[mode]
    for f in findings:
        if mode in f.modes:
            return f"synguard: not attaching: {f.message()}; {why}"
    return None
