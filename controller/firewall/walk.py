"""The walk: a packet through the base chains on the ingress, prerouting
and input hooks and the chains they jump or goto, rule by rule, each
match decided, unknown (an assumption the path carries) or not
applicable; what each path ends in."""

from __future__ import annotations

import dataclasses
import re
import socket
from typing import Iterator

from .nft import CONNTRACK_PRIO, L4_NAMES, LIMIT_XT, MAX_PATHS, NONTERMINAL_XT_TARGETS, OTHER_L4, TCP_FLAGS
from .render import is_tcp_flags, left_key, parse_nft_text, render_rule, text_ct_states


class _U:
    """Unknown: the packet model cannot tell."""

    def __repr__(self):
        return "U"


U = _U()
NA = object()  # the expression does not apply (other protocol): the match is false


@dataclasses.dataclass(frozen=True)
class Pkt:
    nfproto: str  # "ipv4" | "ipv6"
    flags: int
    dport: int
    state: str  # ct state after conntrack: new | invalid | established
    ifname: str | None  # the interface synguard protects, if known


@dataclasses.dataclass(frozen=True)
class Path:
    assumptions: frozenset = frozenset()  # {(key, bool)}
    events: tuple = ()  # ((event, rule_uid, certain), ...)
    untracked: bool = False
    uncertain: bool = False  # rests on an xt match the JSON does not show

    def assume(self, key, val, xt=False):
        return dataclasses.replace(
            self, assumptions=self.assumptions | {(key, val)}, uncertain=self.uncertain or xt
        )

    def event(self, ev, uid, certain=True):
        return dataclasses.replace(self, events=self.events + ((ev, uid, certain),))


@dataclasses.dataclass
class _Chain:
    family: str
    table: str
    name: str
    hook: str | None
    prio: int
    policy: str
    type: str
    dev: object
    rules: list


class TooMany(Exception):
    pass


class Ruleset:
    def __init__(self, data: dict, nft_text: str | None = None):
        items = data.get("nftables", data) if isinstance(data, dict) else data
        self.chains: dict = {}
        self.sets: dict = {}
        self.order: list = []
        for it in items:
            if "chain" in it:
                c = it["chain"]
                ch = _Chain(
                    c["family"],
                    c["table"],
                    c["name"],
                    c.get("hook"),
                    _prio(c.get("prio", 0)),
                    c.get("policy", "accept"),
                    c.get("type", "filter"),
                    c.get("dev"),
                    [],
                )
                self.chains[(c["family"], c["table"], c["name"])] = ch
                self.order.append(ch)
            elif "rule" in it:
                r = it["rule"]
                ch = self.chains.get((r["family"], r["table"], r["chain"]))
                if ch is not None:
                    ch.rules.append(r)
            elif "set" in it or "map" in it:
                s = it.get("set") or it.get("map")
                self.sets[(s["family"], s["table"], s["name"])] = s
        self.text = parse_nft_text(nft_text) if nft_text else {}
        self.dynamic_sets = set()
        for ch in self.order:
            for r in ch.rules:
                for x in r.get("expr", []):
                    if "set" in x and isinstance(x["set"], dict) and "op" in x["set"]:
                        self.dynamic_sets.add(str(x["set"].get("set", "")).lstrip("@"))

    def base_chains(self, hook: str, nfproto: str) -> list:
        fams = {"ipv4": ("ip", "inet"), "ipv6": ("ip6", "inet")}[nfproto]
        if hook == "ingress":
            fams = fams + ("netdev",)
        out = [c for c in self.order if c.hook == hook and c.family in fams]
        return sorted(out, key=lambda c: c.prio)  # stable: ties keep listing order

    def rule_text(self, r) -> str:
        t = self.text.get((r["family"], r["table"], r["chain"], r["handle"]))
        return t if t is not None else render_rule(r)


def _prio(p):
    if isinstance(p, int):
        return p
    names = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
    try:
        return int(p)
    except (TypeError, ValueError):
        return names.get(str(p), 0)


class Walker:
    def __init__(self, rs: Ruleset, pkt: Pkt, baseline: bool):
        self.rs, self.pkt, self.baseline = rs, pkt, baseline
        self.npaths = 0
        self.hook = None
        self.pre_ct = False
        self.family = None
        self.table = None

    # --- values -----------------------------------------------------------
    def ct_state(self, path: Path) -> str:
        if path.untracked:
            return "untracked"
        if self.pre_ct:
            return "invalid"  # measured: before the conntrack hook, ct state is invalid
        return self.pkt.state

    # One branch per kind of expression a match can compare (see
    # render.render_expr): a flat dispatch.
    def value(self, e, path: Path):  # noqa: C901
        p = self.pkt
        if not isinstance(e, dict):
            return e
        k = next(iter(e))
        v = e[k]
        if k == "payload":
            proto, field = v.get("protocol"), v.get("field")
            if proto in ("tcp", "th"):
                if field == "dport":
                    return p.dport
                if field == "flags" and proto == "tcp":
                    return p.flags
                return U
            if proto in OTHER_L4 or proto in ("icmp", "icmpv6"):
                return NA
            if proto == "ip":
                if p.nfproto != "ipv4":
                    return NA
                return "tcp" if field == "protocol" else (4 if field == "version" else U)
            if proto == "ip6":
                if p.nfproto != "ipv6":
                    return NA
                return "tcp" if field == "nexthdr" else (6 if field == "version" else U)
            return U
        if k == "meta":
            key = v["key"]
            if key == "l4proto":
                return "tcp"
            if key == "nfproto":
                return p.nfproto
            if key == "protocol":
                return "ip" if p.nfproto == "ipv4" else "ip6"
            if key in ("iifname", "iif"):
                return ("IF", p.ifname)
            if key == "pkttype":
                return "host"
            return U
        if k == "ct":
            key = v["key"]
            if key == "state":
                return self.ct_state(path)
            if self.ct_state(path) in ("invalid", "untracked"):
                return NA  # no conntrack entry: every other ct key fails to match
            if v.get("dir"):
                return U
            if key == "direction":
                return "original" if self.ct_state(path) != "untracked" else U
            if key in ("l3proto",):
                return p.nfproto
            if key == "protocol":
                return "tcp"
            return U
        if k == "fib":
            flags = v.get("flags", [])
            flags = [flags] if isinstance(flags, str) else flags
            if v.get("result") == "type" and flags == ["daddr"]:
                return "local"  # the ACK is addressed to a local service
            return U
        if k == "&":
            a, b = v
            if is_tcp_flags(a):
                return p.flags & _flags(b)
            av, bv = self.value(a, path), self.value(b, path)
            if isinstance(av, int) and isinstance(bv, int):
                return av & bv
            return NA if NA in (av, bv) else U
        return U

    def set_elems(self, name: str):
        s = self.rs.sets.get((self.family, self.table, name.lstrip("@")))
        if s is None:
            return U
        flags = s.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        if "dynamic" in flags or "timeout" in flags or s["name"] in self.rs.dynamic_sets:
            return U  # filled at run time (add/update from the packet path)
        return s.get("elem", [])

    # --- comparison -------------------------------------------------------
    def match(self, m, path: Path):
        """True / False / U for one match expression."""
        op, left, right = m["op"], m["left"], m["right"]
        lv = self.value(left, path)
        if lv is NA:
            return False
        if lv is U:
            return U
        if isinstance(right, str) and right.startswith("@"):
            right = self.set_elems(right)
            if right is U:
                return U
            right = {"set": right}
        lk = left_key(left)
        if lk == "ct state" or (isinstance(left, dict) and "ct" in left and left["ct"]["key"] == "status"):
            names = _names(right)
            inside = lv in names
            return inside if op in ("==", "in") else not inside
        if is_tcp_flags(left) or (isinstance(left, dict) and "&" in left and is_tcp_flags(left["&"][0])):
            if isinstance(right, dict) and "set" in right:
                inside = lv in {_flags(x) for x in _aslist(right["set"])}
                return inside if op in ("==", "in") else not inside
            r = _flags(right)
            if op == "==":
                return lv == r
            if op == "!=":
                return lv != r
            if op == "in":
                return (lv & r) != 0
            if op == "!":
                return (lv & r) == 0
            return U
        if isinstance(lv, tuple) and lv and lv[0] == "IF":
            ifname = lv[1]
            cands = _aslist(right["set"]) if isinstance(right, dict) and "set" in right else [right]
            return _any_hit(op, [_if_match(ifname, c) for c in cands])
        return _cmp(op, lv, right)

    # --- rules --------------------------------------------------------------
    def eval_rule(self, r, path: Path) -> Iterator:
        """Yields (path, verdict) where verdict is None (go on), or a tuple."""
        uid = (r["family"], r["table"], r["chain"], r["handle"])
        exprs = r.get("expr", [])
        if not any(_acts(x) for x in exprs):
            yield path, None
            return
        yield from self._eval_from(uid, exprs, 0, path, resolved=self._resolve_xt(r))

    def _resolve_xt(self, r):
        """Map expr index of xt conntrack -> (op, names), from nft's text listing."""
        idx = [
            i
            for i, x in enumerate(r.get("expr", []))
            if "xt" in x and x["xt"].get("name") in ("conntrack", "state")
        ]
        tgt = {
            i: x["xt"]["name"]
            for i, x in enumerate(r.get("expr", []))
            if "xt" in x and x["xt"].get("type") == "target"
        }
        out = {}
        text = self.rs.text.get((r["family"], r["table"], r["chain"], r["handle"]))
        if text is None:
            return out
        native = [
            i
            for i, x in enumerate(r.get("expr", []))
            if "match" in x and left_key(x["match"]["left"]) == "ct state"
        ]
        states = text_ct_states(text)
        if idx and len(states) == len(idx) + len(native):
            order = sorted(idx + native)
            for i, st in zip(order, states):
                if i in idx:
                    out[i] = st
        for i, name in tgt.items():
            if name == "CT":
                out[i] = "notrack" if re.search(r"\bnotrack\b", text) else "ct"
        return out

    # One branch per kind of statement a rule can hold, in the order nft
    # evaluates them: a flat dispatch, as the kernel's own.
    def _eval_from(self, uid, exprs, i, path, resolved):  # noqa: C901
        while i < len(exprs):
            x = exprs[i]
            k = next(iter(x))
            v = x[k]
            if k == "match":
                res = self.match(v, path)
                if res is False:
                    yield path, None
                    return
                if res is U:
                    self._count()
                    yield path.assume((uid, i, ""), False), None
                    path = path.assume((uid, i, ""), True)
            elif k in ("limit", "ct count", "quota") or (
                k == "set" and any(next(iter(s)) in ("limit", "ct count", "quota") for s in v.get("stmt", []))
            ):
                path = path.event("limit", uid)
                self._count()
                yield path.assume((uid, i, ""), False), None
                path = path.assume((uid, i, ""), True)
            elif k == "xt":
                name, typ = v.get("name"), v.get("type")
                if typ == "match":
                    if name in ("conntrack", "state"):
                        if i in resolved:
                            op, names = resolved[i]
                            inside = self.ct_state(path) in names
                            res = inside if op == "in" else not inside
                            if not res:
                                yield path, None
                                return
                        else:
                            tag = "ct:" + self.ct_state(path)
                            path = path.event("xtct", uid, False)
                            self._count()
                            yield path.assume((uid, i, tag), False, xt=True), None
                            path = path.assume((uid, i, tag), True, xt=True)
                    elif name in ("icmp", "icmp6", "udp", "sctp", "dccp"):
                        yield path, None
                        return
                    elif name == "comment":
                        pass
                    else:
                        if name in LIMIT_XT:
                            path = path.event("limit", uid)
                        self._count()
                        yield path.assume((uid, i, ""), False), None
                        path = path.assume((uid, i, ""), True)
                else:  # target
                    if name == "CT":
                        how = resolved.get(i)
                        if how == "notrack" or how is None:
                            if self.pre_ct and not path.untracked and self.hook != "input":
                                path = path.event("notrack", uid, how == "notrack")
                                if how == "notrack":
                                    path = dataclasses.replace(path, untracked=True)
                        # CT is not terminal
                    elif name == "SYNPROXY":
                        yield path.event("synproxy", uid), ("synproxy", uid)
                        return
                    elif name == "REJECT":
                        yield path, ("drop", uid)
                        return
                    elif name in NONTERMINAL_XT_TARGETS:
                        pass
                    else:
                        path = path.event("xt_target", uid, False)
            elif k == "notrack":
                if self.pre_ct and not path.untracked and self.hook != "input":
                    path = dataclasses.replace(path.event("notrack", uid), untracked=True)
            elif k == "synproxy":
                yield path.event("synproxy", uid), ("synproxy", uid)
                return
            elif k in ("accept", "drop", "continue", "return"):
                yield path, (k, uid)
                return
            elif k == "reject":
                yield path, ("drop", uid)
                return
            elif k in ("jump", "goto"):
                yield path, (k, uid, v["target"])
                return
            elif k == "queue":
                yield path, ("accept", uid)  # handed to user space: not netfilter's drop
                return
            elif k == "vmap":
                yield from self._vmap(uid, i, v, path)
                return
            # counter, log, mangle, nat statements, ...: no effect on the verdict here
            i += 1
        yield path, None

    def _vmap(self, uid, i, v, path):
        key, data = v["key"], v["data"]
        if isinstance(data, str):
            data = self.set_elems(data)
            elems = [] if data is U else data
            unknown_map = data is U
        else:
            elems = _aslist(data.get("set", [])) if isinstance(data, dict) else []
            unknown_map = False
        kv = self.value(key, path)
        pairs = [(e[0], e[1]) for e in elems if isinstance(e, list) and len(e) == 2]
        if kv is NA:
            yield path, None
            return
        if kv is U or unknown_map:
            for n, (_, verdict) in enumerate(pairs):
                self._count()
                yield path.assume((uid, i, f"vmap{n}"), True), _verdict(verdict, uid)
            yield path.assume((uid, i, "vmap-miss"), True), None
            return
        for k_, verdict in pairs:
            if self.match({"op": "==", "left": key, "right": {"set": [k_]}}, path) is True:
                yield path, _verdict(verdict, uid)
                return
        yield path, None

    def _count(self):
        self.npaths += 1
        if self.npaths > MAX_PATHS:
            raise TooMany()

    # --- chains -------------------------------------------------------------
    def walk_chain(self, chain: _Chain, path: Path, depth: int = 0) -> Iterator:
        """Yields (path, outcome) with outcome ("accept"|"drop"|"synproxy"|"return", actor)."""
        if depth > 64:
            yield path, ("return", None)
            return
        yield from self._walk_rules(chain, 0, path, depth)

    def _walk_rules(self, chain, start, path, depth):
        rules = chain.rules
        for idx in range(start, len(rules)):
            r = rules[idx]
            cont = None
            outs = list(self.eval_rule(r, path))
            # the last yielded "None" verdict is the path that goes on in this loop;
            # every other branch is followed recursively
            for p2, verdict in outs:
                if verdict is None:
                    if cont is None:
                        cont = p2
                    else:
                        yield from self._walk_rules(chain, idx + 1, p2, depth)
                    continue
                kind = verdict[0]
                if kind in ("accept", "drop", "synproxy"):
                    yield p2, (kind, verdict[1])
                elif kind == "return":
                    yield p2, ("return", verdict[1])
                elif kind == "continue":
                    yield from self._walk_rules(chain, idx + 1, p2, depth)
                elif kind in ("jump", "goto"):
                    target = self.rs.chains.get((chain.family, chain.table, verdict[2]))
                    if target is None:
                        yield from self._walk_rules(chain, idx + 1, p2, depth)
                        continue
                    for p3, out in self.walk_chain(target, p2, depth + 1):
                        if out[0] == "return":
                            if kind == "jump":
                                yield from self._walk_rules(chain, idx + 1, p3, depth)
                            else:
                                yield p3, ("return", None)
                        else:
                            yield p3, out
            if cont is None:
                return
            path = cont
        yield path, ("return", None)

    def walk(self) -> list:
        """All paths through ingress, prerouting and input: [(path, outcome, chain, hook)]."""
        done = []
        live = [Path()]
        for hook in ("ingress", "prerouting", "input"):
            for ch in self.rs.base_chains(hook, self.pkt.nfproto):
                if (
                    ch.dev
                    and self.pkt.ifname
                    and ch.dev != self.pkt.ifname
                    and self.pkt.ifname not in _aslist(ch.dev)
                ):
                    continue
                self.hook, self.family, self.table = hook, ch.family, ch.table
                self.pre_ct = hook == "ingress" or (hook == "prerouting" and ch.prio < CONNTRACK_PRIO)
                nxt = []
                for path in live:
                    if ch.type == "nat" and self.ct_state(path) != "new":
                        nxt.append(path)  # nat chains only see a connection's first packet
                        continue
                    for p2, out in self.walk_chain(ch, path):
                        if out[0] == "return":
                            if ch.policy == "drop":
                                done.append((p2, ("drop", None), ch, hook))
                            else:
                                nxt.append(p2)
                        elif out[0] == "accept":
                            nxt.append(p2)
                        else:
                            done.append((p2, out, ch, hook))
                live = _dedup(nxt)
        for path in live:
            done.append((path, ("accept", None), None, None))
        return done


def _dedup(paths):
    seen, out = set(), []
    for p in paths:
        key = (p.assumptions, p.events, p.untracked, p.uncertain)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _verdict(v, uid):
    k = next(iter(v))
    if k in ("jump", "goto"):
        return (k, uid, v[k]["target"])
    return (k, uid)


def _acts(x) -> bool:
    """Can this statement change the verdict (or the packet's tracking)?"""
    k = next(iter(x))
    if k in (
        "accept",
        "drop",
        "reject",
        "continue",
        "return",
        "jump",
        "goto",
        "queue",
        "vmap",
        "notrack",
        "synproxy",
    ):
        return True
    return k == "xt" and x["xt"].get("type") == "target"


def _aslist(v):
    return v if isinstance(v, list) else [v]


def _names(right) -> set:
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    out = set()
    for x in _aslist(right):
        if isinstance(x, str):
            out.add(x)
        elif isinstance(x, list):
            out.update(y for y in x if isinstance(y, str))
    return out


def _flags(v) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return TCP_FLAGS.get(v, 0)
    if isinstance(v, list):
        n = 0
        for x in v:
            n |= _flags(x)
        return n
    if isinstance(v, dict) and "|" in v:
        return _flags(v["|"])
    return 0


def _if_match(ifname, pattern):
    if not isinstance(pattern, str):
        return U
    if pattern == "lo":
        return False  # the handed-off ACK does not arrive on loopback
    if ifname is None:
        return U
    if pattern.endswith("*") and not pattern.endswith("\\*"):
        return ifname.startswith(pattern[:-1])
    return ifname == pattern


def _port(v):
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return socket.getservbyname(v, "tcp")
        except OSError:
            return None
    return None


def _in_elem(lv, e):
    if isinstance(e, dict) and "elem" in e:
        e = e["elem"].get("val")
    if isinstance(e, dict) and "range" in e:
        lo, hi = (_norm(x) for x in e["range"])
        return U if lo is None or hi is None or not isinstance(lv, int) else lo <= lv <= hi
    if isinstance(e, dict):
        return U
    ev = _norm(e)
    if ev is None:
        return U
    return lv == ev


def _norm(x):
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if isinstance(x, str):
        p = _port(x)
        return p if p is not None else x
    return None


def _any_hit(op, res):
    """op (==, in, !=) against a set, from whether each element matches
    (True, False or U, unknown)."""
    hit = True if True in res else (U if U in res else False)
    if op in ("==", "in"):
        return hit
    if op == "!=":
        return U if hit is U else not hit
    return U


def _cmp(op, lv, right):
    if isinstance(lv, str) and isinstance(right, int):
        right = L4_NAMES.get(right, right)
    if isinstance(right, dict) and "set" in right:
        return _any_hit(op, [_in_elem(lv, e) for e in _aslist(right["set"])])
    if isinstance(right, dict) and "range" in right:
        hit = _in_elem(lv, right)
        if op in ("==", "in"):
            return hit
        if op == "!=":
            return U if hit is U else not hit
        return U
    if isinstance(right, dict):
        return U
    rv = _norm(right) if not (isinstance(lv, str) and isinstance(right, str)) else right
    if rv is None:
        return U
    if op in ("==", "in"):
        return lv == rv
    if op == "!=":
        return lv != rv
    if isinstance(lv, int) and isinstance(rv, int):
        return {"<": lv < rv, ">": lv > rv, "<=": lv <= rv, ">=": lv >= rv}.get(op, U)
    return U
