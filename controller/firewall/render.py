"""Rules from `nft -j list ruleset` back into nft's own syntax, and the
text listing (`nft -a list ruleset`), which shows what the JSON leaves out
(xt matches by name only)."""

from __future__ import annotations

import json
import re

from .nft import QUOTED_KEYS, UNQUALIFIED_META


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


# One branch per kind of nft JSON expression: a flat dispatch, which a table
# of small functions would only spread out.
def render_expr(e, quote=False) -> str:  # noqa: C901
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


def left_key(left):
    if isinstance(left, dict):
        if "meta" in left:
            return left["meta"]["key"]
        if "ct" in left:
            return "ct " + left["ct"]["key"]
    return None


def is_tcp_flags(e) -> bool:
    return (
        isinstance(e, dict)
        and e.get("payload", {}).get("protocol") == "tcp"
        and e["payload"].get("field") == "flags"
    )


def render_match(m) -> str:
    op, left, right = m["op"], m["left"], m["right"]
    quote = left_key(left) in QUOTED_KEYS
    opstr = {"==": "", "in": "", "!=": "!= ", "!": "! "}.get(op, op + " ")
    if isinstance(left, dict) and "&" in left and is_tcp_flags(left["&"][0]):
        return f"tcp flags {opstr}{render_value(right)} / {render_value(left['&'][1])}"
    if isinstance(right, int) and not isinstance(right, bool) and left_key(left) in ("mark", "ct mark"):
        return f"{render_expr(left, quote)} {opstr}0x{right:08x}"
    if isinstance(right, bool):
        return f"{render_expr(left, quote)} {opstr}{'exists' if right else 'missing'}"
    return f"{render_expr(left, quote)} {opstr}{render_value(right, quote)}"


def _with_args(name, v, **formats):
    """`name key value ...` for each key of formats that v has, in order."""
    return " ".join([name] + ["%s %s" % (key, fmt % v[key]) for key, fmt in formats.items() if key in v])


# One branch per kind of nft statement (see render_expr).
def render_stmt(s) -> str:  # noqa: C901
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


def text_ct_states(text: str) -> list:
    out = []
    for m in _CT_STATE_TXT.finditer(text):
        names = m.group(2).strip("{} ").replace(" ", "")
        out.append(("!=" if m.group(1) else "in", [n for n in names.split(",") if n]))
    return out
