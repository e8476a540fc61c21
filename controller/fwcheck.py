"""Will connections that synguard hands off pass this namespace's firewall?

synguard answers SYNs at XDP, so netfilter never sees a protected connection's
SYN: the first packet it sees is the client's ACK.  What conntrack makes of that
ACK depends on how synguard runs (measured, see REPORT.md):

  mode "loose"   nf_conntrack_tcp_loose=1 (the default), no entry inserted:
                 the ACK is ct state new (conntrack picks the flow up mid-stream)
  mode "strict"  nf_conntrack_tcp_loose=0, no entry inserted: ct state invalid
  mode "insert"  synguard inserted the conntrack entry from tc: ct state
                 established, exactly like a kernel-handled connection's ACK

check() walks the base chains on the ingress, prerouting and input hooks (and
the chains they jump or goto, and simple verdict maps) with that ACK in each
mode, for IPv4 and IPv6 and each protected port, and reports the rules that
treat it differently from a connection the kernel handled itself (its SYN as
ct state new, its ACK as ct state established).

The rule sets in tests/firewall/ were each loaded into a namespace and a
bare ACK sent through them: this check's certain verdicts matched what the
kernel did in every case (IPv4 and IPv6, loose=0 and 1). firewall.py turns
the findings into what attach does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
from typing import Iterable, Iterator

KINDS = (
    "invalid_drop",  # the ACK is dropped because it is ct state invalid
    "new_not_syn_drop",  # the ACK is dropped because it is ct state new and not a SYN
    "new_accept_limit",  # a rate/count limit on ct state new now counts handed-off ACKs
    "notrack",  # the port is untracked (ct state untracked; a ct insert is moot)
    "synproxy",  # a synproxy rule sees the ACK: its cookie check drops it
    "legacy",  # iptables-legacy tables exist: invisible to nft
    "port_closed",  # kernel-handled SYNs to the port are dropped too (nothing to hand off)
    "unknown",  # the walk could not be completed (see note)
)
MODES = ("loose", "strict", "insert")
MODE_STATE = {"loose": "new", "strict": "invalid", "insert": "established"}
CONNTRACK_PRIO = -200  # NF_IP_PRI_CONNTRACK on prerouting
MAX_PATHS = 20000

TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}
L4_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 136: "udplite"}
OTHER_L4 = {"udp", "udplite", "icmp", "icmpv6", "sctp", "dccp", "esp", "ah", "comp", "igmp", "gre"}
UNQUALIFIED_META = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
QUOTED_KEYS = {"iifname", "oifname", "iif", "oif", "ibrname", "obrname", "ibriport", "obriport"}
LIMIT_XT = {"limit", "hashlimit", "connlimit", "recent", "quota", "connbytes", "connrate"}
NONTERMINAL_XT_TARGETS = {
    "LOG",
    "NFLOG",
    "MARK",
    "CONNMARK",
    "TCPMSS",
    "DSCP",
    "TOS",
    "CLASSIFY",
    "NOTRACK_LOG",
    "AUDIT",
    "CONNSECMARK",
    "SECMARK",
    "TRACE",
    "HMARK",
    "TTL",
    "HL",
    "IDLETIMER",
    "LED",
    "CHECKSUM",
    "TEE",
    "SET",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str
    table: str
    chain: str
    hook: str  # hook of the base chain the rule was reached from
    handle: int | None  # None: the chain's policy (or a legacy table)
    rule: str  # the rule as `nft list ruleset` prints it
    family: str = ""  # table family: ip, ip6, inet, netdev
    ipv: tuple = ()  # which packets: ("ipv4", "ipv6")
    modes: tuple = ()  # modes in which it stops handed-off connections
    certain: bool = True  # False: depends on what the JSON does not show
    note: str = ""

    def message(self, port: int | None = None) -> str:
        """One line for attach's refusal."""
        where = f"{self.family} {self.table} {self.chain}".strip()
        at = f"handle {self.handle}" if self.handle is not None else "policy"
        what = {
            "invalid_drop": "drops the client's ACK as ct state invalid",
            "new_not_syn_drop": "drops the client's ACK as ct state new that is not a SYN",
            "new_accept_limit": "limits ct state new, which now counts handed-off ACKs",
            "notrack": "leaves the port untracked",
            "synproxy": "hands the ACK to synproxy, whose cookie check drops it",
            "legacy": "iptables-legacy tables are present and cannot be inspected through nft",
            "unknown": "could not be checked",
            "port_closed": "is closed: the firewall drops SYNs to it too",
        }[self.kind]
        maybe = "" if self.certain else " (may: " + (self.note or "parameters not shown") + ")"
        if self.kind == "port_closed":
            return f"{self.rule}: {what}"
        if self.kind == "legacy":
            return f'iptables-legacy {self.family} table {self.table}: "{self.rule}": {what}'
        return f'{where} (hook {self.hook}) {at}: "{self.rule}" {what}{maybe}'


# --------------------------------------------------------------------------
# rendering: JSON expressions back to nft syntax


def _q(v):
    return f'"{v}"'


def render_value(v, quote=False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return _q(v) if quote and not v.startswith("@") else v
    if isinstance(v, list):
        return ",".join(render_value(x, quote) for x in v)
    if isinstance(v, dict):
        return render_expr(v, quote)
    return json.dumps(v)


def render_expr(e, quote=False) -> str:
    if not isinstance(e, dict):
        return render_value(e, quote)
    ((k, v),) = e.items() if len(e) == 1 else (next(iter(e.items())),)
    if k == "payload":
        if "protocol" in v:
            return f"{v['protocol']} {v['field']}"
        return f"@{v.get('base')},{v.get('offset')},{v.get('len')}"
    if k == "meta":
        key = v["key"]
        return key if key in UNQUALIFIED_META else f"meta {key}"
    if k == "ct":
        parts = ["ct"]
        if v.get("dir"):
            parts.append(v["dir"])
        if v.get("family"):
            parts.append(v["family"])
        parts.append(v["key"])
        return " ".join(parts)
    if k in ("&", "|", "^", "<<", ">>"):
        return f" {k} ".join(render_expr(x, quote) for x in v)
    if k == "set":
        if isinstance(v, list):
            return "{ " + ", ".join(render_elem(x, quote) for x in v) + " }"
        return "{ " + render_elem(v, quote) + " }"
    if k == "range":
        return f"{render_value(v[0], quote)}-{render_value(v[1], quote)}"
    if k == "prefix":
        return f"{v['addr']}/{v['len']}"
    if k == "concat":
        return " . ".join(render_expr(x, quote) for x in v)
    if k == "fib":
        flags = v.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        return f"fib {' . '.join(flags)} {v.get('result')}"
    if k == "tcp option":
        return f"tcp option {v.get('name')}" + (f" {v['field']}" if v.get("field") else "")
    if k in ("socket", "rt", "osf", "ipsec"):
        return f"{k} {v.get('key', '')}".strip()
    if k == "elem":
        return render_value(v.get("val"), quote)
    if k == "map":
        return f"{render_expr(v['key'])} map {render_expr(v['data'])}"
    return json.dumps(e)


def render_elem(x, quote=False) -> str:
    if isinstance(x, list) and len(x) == 2 and isinstance(x[1], dict) and _is_verdict(x[1]):
        return f"{render_elem(x[0], quote)} : {render_stmt(x[1])}"
    if isinstance(x, list) and len(x) == 2 and not all(isinstance(i, str) for i in x):
        return f"{render_elem(x[0], quote)} : {render_elem(x[1], quote)}"
    return render_value(x, quote)


def _is_verdict(d) -> bool:
    return (
        isinstance(d, dict)
        and len(d) == 1
        and next(iter(d)) in ("accept", "drop", "continue", "return", "jump", "goto", "queue")
    )


def _left_key(left):
    if isinstance(left, dict):
        if "meta" in left:
            return left["meta"]["key"]
        if "ct" in left:
            return "ct " + left["ct"]["key"]
    return None


def _is_tcp_flags(e) -> bool:
    return (
        isinstance(e, dict)
        and e.get("payload", {}).get("protocol") == "tcp"
        and e["payload"].get("field") == "flags"
    )


def render_match(m) -> str:
    op, left, right = m["op"], m["left"], m["right"]
    quote = _left_key(left) in QUOTED_KEYS
    opstr = {"==": "", "in": "", "!=": "!= ", "!": "! "}.get(op, op + " ")
    if isinstance(left, dict) and "&" in left and _is_tcp_flags(left["&"][0]):
        return f"tcp flags {opstr}{render_value(right)} / {render_value(left['&'][1])}"
    if isinstance(right, int) and not isinstance(right, bool) and _left_key(left) in ("mark", "ct mark"):
        return f"{render_expr(left, quote)} {opstr}0x{right:08x}"
    if isinstance(right, bool):
        return f"{render_expr(left, quote)} {opstr}{'exists' if right else 'missing'}"
    return f"{render_expr(left, quote)} {opstr}{render_value(right, quote)}"


def _with_args(name, v, **formats):
    """`name key value ...` for each key of formats that v has, in order."""
    return " ".join([name] + ["%s %s" % (key, fmt % v[key]) for key, fmt in formats.items() if key in v])


def render_stmt(s) -> str:
    ((k, v),) = s.items()
    if k == "match":
        return render_match(v)
    if k in ("accept", "drop", "continue", "return"):
        return k
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k == "counter":
        if isinstance(v, dict):
            return f"counter packets {v.get('packets', 0)} bytes {v.get('bytes', 0)}"
        return "counter" if v is None else f"counter name {render_value(v)}"
    if k == "reject":
        if not v:
            return "reject"
        if v.get("expr") == "port-unreachable" and v.get("type") in ("icmpx", "icmp", "icmpv6"):
            return "reject"
        return f"reject with {v.get('type')}" + (f" {v['expr']}" if v.get("expr") else "")
    if k == "limit":
        over = "over " if v.get("inv") else ""
        unit = "" if v.get("rate_unit", "packets") == "packets" else f" {v['rate_unit']}"
        txt = f"limit rate {over}{v['rate']}{unit}/{v.get('per', 'second')}"
        burst = v.get("burst", 0)
        if burst and burst != 5:
            txt += f" burst {burst} {v.get('burst_unit', 'packets')}"
        return txt
    if k == "ct count":
        return f"ct count {'over ' if v.get('inv') else ''}{v['val']}"
    if k == "quota":
        return f"quota {'over ' if v.get('inv') else ''}{v.get('val')} {v.get('val_unit', 'bytes')}"
    if k == "log":
        return _with_args("log", v or {}, prefix='"%s"', level="%s", group="%s")
    if k == "notrack":
        return "notrack"
    if k == "synproxy":
        fl = (v or {}).get("flags", [])
        return " ".join(
            [_with_args("synproxy", v or {}, mss="%s", wscale="%s")] + ([fl] if isinstance(fl, str) else fl)
        )
    if k == "set":
        inner = " ".join([render_expr(v["elem"])] + [render_stmt(x) for x in v.get("stmt", [])])
        return f"{v['op']} {v['set']} {{ {inner} }}"
    if k == "vmap":
        data = v["data"]
        d = render_expr(data) if isinstance(data, dict) else render_value(data)
        return f"{render_expr(v['key'])} vmap {d}"
    if k == "xt":
        return f"xt {v.get('type')} {v.get('name')}"
    if k == "mangle":
        return f"{render_expr(v['key'])} set {render_value(v['value'])}"
    if k in ("snat", "dnat", "masquerade", "redirect"):
        if not v:
            return k
        txt = k
        if "addr" in v:
            txt += f" to {render_value(v['addr'])}"
            if "port" in v:
                txt += f":{render_value(v['port'])}"
        elif "port" in v:
            txt += f" to :{render_value(v['port'])}"
        return txt
    if k == "queue":
        return "queue" if not v else f"queue num {v.get('num', 0)}"
    return json.dumps(s)


def render_rule(rule) -> str:
    txt = " ".join(render_stmt(s) for s in rule.get("expr", []))
    if rule.get("comment"):
        txt += f' comment "{rule["comment"]}"'
    return txt


# --------------------------------------------------------------------------
# the text listing (`nft -a list ruleset`): what nft itself prints, xt included

_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")


def parse_nft_text(text: str) -> dict:
    """{(family, table, chain, handle): rule text} from `nft -a list ruleset`."""
    out, fam, table, chain = {}, None, None, None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"table (\S+) (\S+) \{", s)
        if m:
            fam, table, chain = m.group(1), m.group(2), None
            continue
        m = re.match(r"chain (\S+) \{", s)
        if m:
            chain = m.group(1)
            continue
        if re.match(
            r"(set|map|flowtable|counter|quota|limit|ct helper|ct timeout|ct expectation|synproxy|secmark)"
            r" \S+ \{( # handle \d+)?$",
            s,
        ):
            chain = None
            continue
        h = _HANDLE.search(s)
        if h and chain is not None:
            out[(fam, table, chain, int(h.group(1)))] = _HANDLE.sub("", s).strip()
    return out


_CT_STATE_TXT = re.compile(r"\bct state (!= )?((?:[a-z]+,)*[a-z]+|\{[^}]*\})")


def _text_ct_states(text: str) -> list:
    out = []
    for m in _CT_STATE_TXT.finditer(text):
        names = m.group(2).strip("{} ").replace(" ", "")
        out.append(("!=" if m.group(1) else "in", [n for n in names.split(",") if n]))
    return out


# --------------------------------------------------------------------------
# evaluation


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


class _TooMany(Exception):
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


class _Walker:
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

    def value(self, e, path: Path):
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
            if _is_tcp_flags(a):
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
        lk = _left_key(left)
        if lk == "ct state" or (isinstance(left, dict) and "ct" in left and left["ct"]["key"] == "status"):
            names = _names(right)
            inside = lv in names
            return inside if op in ("==", "in") else not inside
        if _is_tcp_flags(left) or (isinstance(left, dict) and "&" in left and _is_tcp_flags(left["&"][0])):
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
            res = [_if_match(ifname, c) for c in cands]
            hit = True if True in res else (U if U in res else False)
            if op in ("==", "in"):
                return hit
            if op == "!=":
                return U if hit is U else not hit
            return U
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
            if "match" in x and _left_key(x["match"]["left"]) == "ct state"
        ]
        states = _text_ct_states(text)
        if idx and len(states) == len(idx) + len(native):
            order = sorted(idx + native)
            for i, st in zip(order, states):
                if i in idx:
                    out[i] = st
        for i, name in tgt.items():
            if name == "CT":
                out[i] = "notrack" if re.search(r"\bnotrack\b", text) else "ct"
        return out

    def _eval_from(self, uid, exprs, i, path, resolved):
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
            raise _TooMany()

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


def _cmp(op, lv, right):
    if isinstance(lv, str) and isinstance(right, int):
        right = L4_NAMES.get(right, right)
    if isinstance(right, dict) and "set" in right:
        res = [_in_elem(lv, e) for e in _aslist(right["set"])]
        hit = True if True in res else (U if U in res else False)
        if op in ("==", "in"):
            return hit
        if op == "!=":
            return U if hit is U else not hit
        return U
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


# --------------------------------------------------------------------------
# the check


def _static_match(rs: Ruleset, r, pkt: Pkt, state: str) -> object:
    """Do a rule's matches (limits ignored) hold for pkt in ct state `state`?"""
    w = _Walker(rs, dataclasses.replace(pkt, state=state), True)
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
    found: dict = {}
    rules = {}
    for ch in rs.order:
        for r in ch.rules:
            rules[(r["family"], r["table"], r["chain"], r["handle"])] = (r, ch)

    def add(kind, uid, ch, hook, ipv, modes=(), certain=True, note=""):
        if uid is not None:
            r, rch = rules[uid]
            key = (kind,) + uid
            f = Finding(
                kind,
                uid[1],
                uid[2],
                hook or "",
                uid[3],
                rs.rule_text(r),
                uid[0],
                (ipv,),
                tuple(modes),
                certain,
                note,
            )
        else:
            key = (kind, ch.family, ch.table, ch.name, None)
            f = Finding(
                kind,
                ch.table,
                ch.name,
                hook or "",
                None,
                f"policy {ch.policy}",
                ch.family,
                (ipv,),
                tuple(modes),
                certain,
                note,
            )
        old = found.get(key)
        if old is None:
            found[key] = f
        else:
            found[key] = dataclasses.replace(
                old,
                ipv=tuple(sorted(set(old.ipv) | {ipv})),
                modes=tuple(m for m in MODES if m in set(old.modes) | set(modes)),
                certain=old.certain and certain,
                note=old.note or note,
            )

    try:
        for ipv in families:
            for port in ports:
                base = []
                for flags, state in ((TCP_FLAGS["syn"], "new"), (TCP_FLAGS["ack"], "established")):
                    w = _Walker(rs, Pkt(ipv, flags, port, state, ifname), True)
                    walked = w.walk()
                    base.extend(walked)
                    if state == "new" and all(o[0] == "drop" for _, o, _, _ in walked):
                        closed = True
                        break
                else:
                    closed = False
                if closed:
                    old = found.get(("port_closed", port))
                    found[("port_closed", port)] = Finding(
                        "port_closed",
                        "",
                        "",
                        "",
                        None,
                        f"tcp dport {port}",
                        "",
                        tuple(sorted(set(old.ipv if old else ()) | {ipv})),
                        (),
                        True,
                        "the firewall drops kernel-handled SYNs to this port as well",
                    )
                    continue
                for mode in MODES:
                    pkt = Pkt(ipv, TCP_FLAGS["ack"], port, MODE_STATE[mode], ifname)
                    paths = _Walker(rs, pkt, False).walk()

                    def kernel_drops_too(path, out, ch):
                        actor = out[1]
                        mine = _comparable(path.assumptions, actor)
                        return any(
                            bo[0] == "drop"
                            and bo[1] == actor
                            and (actor is not None or bch is ch)
                            and _comparable(bp.assumptions, actor) <= mine
                            for bp, bo, bch, _ in base
                        )

                    ends = {
                        (o[0], o[1], c.name if c else None)
                        for p_, o, c, _ in paths
                        if not (o[0] == "drop" and kernel_drops_too(p_, o, c))
                    }
                    for path, out, ch, hook in paths:
                        for ev, uid, certain in path.events:
                            if ev == "notrack":
                                add(
                                    "notrack",
                                    uid,
                                    None,
                                    "prerouting",
                                    ipv,
                                    (),
                                    certain,
                                    "" if certain else "xt target CT: --notrack or another CT option",
                                )
                            elif ev == "limit" and mode == "loose":
                                r, _ = rules[uid]
                                est = _static_match(rs, r, pkt, "established")
                                if est is not True and _decides(r):
                                    add(
                                        "new_accept_limit",
                                        uid,
                                        None,
                                        hook or "input",
                                        ipv,
                                        (),
                                        est is False and not path.uncertain,
                                        ""
                                        if est is False
                                        else "whether it applies to ct state new is not shown",
                                    )
                        if out[0] == "synproxy":
                            add(
                                "synproxy",
                                out[1],
                                ch,
                                hook,
                                ipv,
                                (mode,),
                                not path.uncertain,
                                "" if not path.uncertain else "xt conntrack/state matches on the path",
                            )
                            continue
                        if out[0] != "drop" or mode == "insert":
                            continue  # insert: the same packet as a kernel-handled connection's ACK
                        actor = out[1]
                        if kernel_drops_too(path, out, ch):
                            continue  # a kernel-handled connection is dropped there too
                        kind = "new_not_syn_drop" if mode == "loose" else "invalid_drop"
                        alone = len(ends) == 1  # every path of this packet ends here
                        note = ""
                        if path.uncertain:
                            note = "the path uses xt conntrack/state matches, whose states the JSON lacks"
                        elif not alone:
                            note = "only for some packets (conditions the check cannot evaluate)"
                        if path.untracked:
                            note = (note + "; " if note else "") + "the port is untracked"
                        add(kind, actor, ch, hook, ipv, (mode,), alone and not path.uncertain, note)
    except _TooMany:
        found[("unknown",)] = Finding("unknown", "", "", "", None, "", note=f"more than {MAX_PATHS} paths")

    out = list(found.values())
    if legacy:
        out.extend(legacy_findings(legacy))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(out, key=lambda f: (order[f.kind], f.family, f.table, f.chain, f.handle or 0))


# --------------------------------------------------------------------------
# iptables-legacy


def legacy_findings(legacy: dict) -> list[Finding]:
    """legacy = {"ipv4": {"names": "...", "save": "..."|None}, "ipv6": {...}}.

    names: /proc/net/ip_tables_names (ip6_tables_names) read in the namespace.
    save:  iptables-legacy-save output, if it was read (it only lists the tables
           in `names`; `iptables-legacy -L` would create the filter table)."""
    out = []
    for ipv, d in legacy.items():
        names = [n for n in (d.get("names") or "").split() if n]
        if not names:
            continue
        save = d.get("save")
        fam = "ip" if ipv == "ipv4" else "ip6"
        if save is None:
            out.append(
                Finding(
                    "legacy",
                    ",".join(names),
                    "",
                    "",
                    None,
                    f"{'iptables' if ipv == 'ipv4' else 'ip6tables'}-legacy tables: {' '.join(names)}",
                    fam,
                    (ipv,),
                    MODES,
                    False,
                    "rules not read",
                )
            )
            continue
        table = None
        for line in save.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                chain, pol = line[1:].split()[:2]
                if pol not in ("ACCEPT", "-"):
                    out.append(
                        Finding(
                            "legacy",
                            table,
                            chain,
                            "",
                            None,
                            f"policy {pol}",
                            fam,
                            (ipv,),
                            MODES,
                            False,
                            "legacy rules are not checked",
                        )
                    )
            elif line.startswith("-A "):
                chain = line.split()[1]
                out.append(
                    Finding(
                        "legacy",
                        table,
                        chain,
                        "",
                        None,
                        line.strip(),
                        fam,
                        (ipv,),
                        MODES,
                        False,
                        "legacy rules are not checked",
                    )
                )
    return out


def read_legacy(run=lambda argv: subprocess.run(argv, capture_output=True, text=True).stdout) -> dict:
    """Read the legacy tables of the current namespace, creating none."""
    out = {}
    for ipv, proc, save in (
        ("ipv4", "/proc/net/ip_tables_names", "iptables-legacy-save"),
        ("ipv6", "/proc/net/ip6_tables_names", "ip6tables-legacy-save"),
    ):
        try:
            names = open(proc).read()
        except OSError:
            names = ""
        text = None
        if names.split():
            try:
                text = run([save])
            except OSError:
                text = None
        out[ipv] = {"names": names, "save": text}
    return out


def refusal(findings: list[Finding], mode: str) -> str | None:
    """The one line attach prints when it refuses, or None."""
    why = {
        "loose": "handed-off ACKs are ct state new (nf_conntrack_tcp_loose=1)",
        "strict": "handed-off ACKs are ct state invalid (nf_conntrack_tcp_loose=0)",
        "insert": "synguard inserts their conntrack entries",
    }[mode]
    for f in findings:
        if mode in f.modes:
            return f"synguard: not attaching: {f.message()}; {why}"
    return None
