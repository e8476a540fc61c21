"""synguard.firewall's check against real rule sets: firewall/ here holds, for each,
`nft -j list ruleset` (NAME.json) and `nft -a list ruleset` (NAME.txt) as
Debian 12's nft 1.0.6 printed them after the rules were loaded into a
namespace (nft, iptables-nft, ufw, firewalld, iptables-legacy). Each case is
checked twice: with the text listing (which resolves the xt matches) and
with the JSON alone.

Rows: (kind, table family, table, chain, handle, modes that block, certain
with the text), and the variant that alone finds it where only one does."""

import glob
import json
import os

import pytest
from synguard.firewall import findings, legacy, nft, render

HERE = os.path.dirname(os.path.abspath(__file__))
C = os.path.join(HERE, "firewall")
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(C, "*.json")))

# The listing each variant reads: the text resolves iptables-nft's xt
# matches, the JSON alone cannot.
TEXT, JSON = "text", "json"
# Rule sets made by iptables-nft: read from the JSON alone, none of their
# findings is certain.
XT_CASES = {
    "c_ipt_conntrack",
    "c_ipt_conntrack_syn",
    "c_ipt_state",
    "c_ipt_state_syn",
    "c_ipt_state_syn_conntrack",
    "d_ufw",
    "f_ipt_limits",
    "f_ipt_synproxy_notrack",
}
# Rows several rule sets share: the same rules, written another way. A row
# with an eighth column is found by that variant alone.
INET_INVALID = [("invalid_drop", "inet", "filter", "input", 3, "strict", True)]
INET_NOT_SYN = INET_INVALID + [("new_not_syn_drop", "inet", "filter", "input", 4, "loose", True)]
IPT_INVALID = [
    ("invalid_drop", "ip", "filter", "INPUT", 3, "strict", True),
    ("invalid_drop", "ip6", "filter", "INPUT", 3, "strict", True),
]
IPT_NOT_SYN = IPT_INVALID + [
    ("invalid_drop", "ip", "filter", "INPUT", 4, "strict", False, JSON),
    ("invalid_drop", "ip6", "filter", "INPUT", 4, "strict", False, JSON),
    ("new_not_syn_drop", "ip", "filter", "INPUT", 4, "loose", True),
    ("new_not_syn_drop", "ip6", "filter", "INPUT", 4, "loose", True),
]
EXPECTED = {
    "a_inet": INET_INVALID,
    "a_ip_ip6": [
        ("invalid_drop", "ip", "filter", "input", 3, "strict", True),
        ("invalid_drop", "ip6", "filter", "input", 3, "strict", True),
    ],
    "b_after_accept": INET_INVALID,
    "b_ip6_mask": [
        ("invalid_drop", "ip6", "filter", "input", 3, "strict", True),
        ("new_not_syn_drop", "ip6", "filter", "input", 4, "loose", True),
    ],
    "b_mask": INET_NOT_SYN,
    "b_neq": INET_NOT_SYN,
    "b_not": INET_NOT_SYN,
    "b_restricted": [
        ("invalid_drop", "inet", "filter", "input", 3, "strict", True),
        ("new_not_syn_drop", "inet", "filter", "input", 5, "loose", False),
        ("new_not_syn_drop", "inet", "filter", "input", 6, "loose", False),
    ],
    "c_ipt_conntrack": IPT_INVALID,
    "c_ipt_conntrack_syn": IPT_NOT_SYN,
    "c_ipt_state": IPT_INVALID,
    "c_ipt_state_syn": IPT_NOT_SYN,
    "c_ipt_state_syn_conntrack": IPT_NOT_SYN,
    "d_ufw": [
        ("invalid_drop", "ip", "filter", "ufw-before-input", 57, "strict", True),
        ("invalid_drop", "ip6", "filter", "ufw6-before-input", 60, "strict", True),
    ],
    "e_firewalld": [
        ("invalid_drop", "inet", "firewalld", "filter_INPUT", 29, "strict", True),
    ],
    "f_accept_only": [],
    "f_ctcount": [
        ("new_accept_limit", "inet", "filter", "input", 3, "", True),
    ],
    "f_empty": [],
    "f_ipt_limits": [
        ("invalid_drop", "ip", "filter", "INPUT", 3, "strict", False, JSON),
        ("invalid_drop", "ip", "filter", "INPUT", 4, "strict", False, JSON),
        ("invalid_drop", "ip", "filter", "INPUT", None, "strict", True, TEXT),
        ("invalid_drop", "ip6", "filter", "INPUT", 3, "strict", False, JSON),
        ("invalid_drop", "ip6", "filter", "INPUT", 4, "strict", False, JSON),
        ("invalid_drop", "ip6", "filter", "INPUT", None, "strict", True, TEXT),
        ("new_accept_limit", "ip", "filter", "INPUT", 3, "", True),
        ("new_accept_limit", "ip", "filter", "INPUT", 4, "", True),
        ("new_accept_limit", "ip", "filter", "INPUT", 5, "", True),
        ("new_accept_limit", "ip6", "filter", "INPUT", 3, "", True),
        ("new_accept_limit", "ip6", "filter", "INPUT", 4, "", True),
        ("new_accept_limit", "ip6", "filter", "INPUT", 5, "", True),
    ],
    "f_ipt_synproxy_notrack": [
        ("invalid_drop", "ip", "filter", "INPUT", 3, "strict", False, JSON),
        ("invalid_drop", "ip6", "filter", "INPUT", 3, "strict", False, JSON),
        ("synproxy", "ip", "filter", "INPUT", 2, "loose,strict,insert", False, JSON),
        ("synproxy", "ip", "filter", "INPUT", 2, "strict", True, TEXT),
        ("synproxy", "ip6", "filter", "INPUT", 2, "loose,strict,insert", False, JSON),
        ("synproxy", "ip6", "filter", "INPUT", 2, "strict", True, TEXT),
    ],
    "f_legacy": [
        ("legacy", "ip", "filter", "INPUT", None, "loose,strict,insert", False),
    ],
    "f_legacy_read_only": [],
    "f_limit": [
        ("invalid_drop", "inet", "filter", "input", 3, "strict", True),
        ("new_accept_limit", "inet", "filter", "input", 4, "", True),
    ],
    "f_meter": [
        ("new_accept_limit", "inet", "filter", "input", 5, "", True),
        ("new_accept_limit", "inet", "filter", "input", 6, "", True),
    ],
    "f_notrack": [
        ("notrack", "inet", "raw", "prerouting", 2, "", True),
    ],
    "f_prerouting_drop": [
        ("invalid_drop", "inet", "mangle", "prerouting", 3, "strict", True),
        ("new_not_syn_drop", "inet", "mangle", "pre_checks", 5, "loose", True),
    ],
    "f_synproxy": [
        ("synproxy", "inet", "filter", "input", 2, "strict", True),
    ],
    "f_two_tables": [
        ("invalid_drop", "ip", "b", "input", 2, "strict", True),
    ],
    "f_vmap_jump": [
        ("invalid_drop", "inet", "filter", "input", 9, "strict", True),
        ("new_not_syn_drop", "inet", "filter", "web", 5, "loose", True),
    ],
}


def load(name):
    return json.load(open(os.path.join(C, name + ".json")))


def text(name):
    return open(os.path.join(C, name + ".txt")).read()


def legacy_of(name):
    p = os.path.join(C, name + ".ip_tables_names")
    if not os.path.exists(p):
        return None

    def rd(suffix):
        with open(os.path.join(C, name + suffix)) as f:
            return f.read()

    return {
        "ipv4": {"names": rd(".ip_tables_names"), "save": rd(".iptables-legacy-save")},
        "ipv6": {"names": rd(".ip6_tables_names"), "save": rd(".ip6tables-legacy-save")},
    }


def rows(findings):
    return sorted(
        {(f.kind, f.family, f.table, f.chain, f.handle, ",".join(f.modes), f.certain) for f in findings},
        key=str,
    )


def expected(name, variant):
    """EXPECTED's rows for name as the variant (TEXT or JSON) reads it."""
    uncertain = variant == JSON and name in XT_CASES
    return [(*row[:6], row[6] and not uncertain) for row in EXPECTED[name] if row[7:] in ((), (variant,))]


def test_all_cases_have_expectations():
    assert set(CASES) == set(EXPECTED) and XT_CASES <= set(CASES)
    assert len(CASES) >= 25


@pytest.mark.parametrize("variant", [TEXT, JSON])
@pytest.mark.parametrize("name", CASES)
def test_case(name, variant):
    nft_text = text(name) if variant == TEXT else None
    fs = findings.check(load(name), [8080], nft_text=nft_text, legacy=legacy_of(name))
    assert rows(fs) == sorted(expected(name, variant), key=str)
    for f in fs:
        assert f.kind in nft.KINDS
        assert "\n" not in f.message()


@pytest.mark.parametrize("name", CASES)
def test_rendering_matches_nft(name):
    """Every rule without xt renders exactly as `nft list ruleset` prints it."""
    listing = render.parse_nft_text(text(name))
    n = 0
    for item in load(name)["nftables"]:
        r = item.get("rule")
        if not r:
            continue
        nft = listing[(r["family"], r["table"], r["chain"], r["handle"])]
        mine = render.render_rule(r)
        if any("xt" in x for x in r["expr"]):
            assert "xt " in mine
            continue
        assert mine == nft
        n += 1


def test_xt_shapes():
    """How iptables-nft's conntrack/state and ! --syn appear in the JSON."""
    exprs = [i["rule"]["expr"] for i in load("c_ipt_state_syn")["nftables"] if "rule" in i]
    assert exprs[1] == [
        {"xt": {"type": "match", "name": "conntrack"}},
        {"counter": {"packets": 0, "bytes": 0}},
        {"drop": None},
    ]
    assert exprs[2][0] == {
        "match": {
            "op": "!=",
            "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]},
            "right": "syn",
        }
    }
    # -m state --state is the same kernel match as -m conntrack
    assert exprs[2][1] == {"xt": {"type": "match", "name": "conntrack"}}
    # the text listing of the same rule names the state
    assert "ct state new" in text("c_ipt_state_syn")


def test_native_ct_state_shapes():
    exprs = [i["rule"]["expr"] for i in load("a_inet")["nftables"] if "rule" in i]
    assert exprs[0][0]["match"] == {
        "op": "in",
        "left": {"ct": {"key": "state"}},
        "right": ["established", "related"],
    }
    assert exprs[1][0]["match"] == {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}


def test_other_ports_and_interfaces():
    d = load("b_restricted")
    # port 22 is not accepted at all there: the port-22 rule is moot
    assert [f.kind for f in findings.check(d, [22])] == ["port_closed"]
    assert 4 not in {f.handle for f in findings.check(d, [8080])}
    got = {(f.kind, f.handle, f.certain) for f in findings.check(d, [8080], ifname="sgwan0")}
    assert ("new_not_syn_drop", 5, True) in got
    got = {(f.kind, f.handle) for f in findings.check(d, [8080], ifname="eth0")}
    assert ("new_not_syn_drop", 5) not in got and ("new_not_syn_drop", 4) not in got
    v = load("f_vmap_jump")
    # 8443 is in the named set @svc: jump web, whose first rule drops the ACK
    assert {(f.chain, f.handle) for f in findings.check(v, [8443]) if f.kind == "new_not_syn_drop"} == {
        ("web", 5)
    }
    # 9000 (vmap: goto other, which returns to the policy) and 5555 accept no SYN
    assert [f.rule for f in findings.check(v, [9000, 5555])] == ["tcp dport 9000", "tcp dport 5555"]
    assert [f.kind for f in findings.check(v, [443])] == ["invalid_drop"]
    n = findings.check(load("f_ipt_synproxy_notrack"), [9090], nft_text=text("f_ipt_synproxy_notrack"))
    assert {(f.kind, f.family, f.handle, f.certain) for f in n} == {
        ("notrack", "ip", 3, True),
        ("notrack", "ip6", 3, True),
    }


def test_closed_port():
    fs = findings.check(load("a_inet"), [9999])
    assert [(f.kind, f.ipv) for f in fs] == [("port_closed", ("ipv4", "ipv6"))]


def test_refusal_line():
    fs = findings.check(load("b_mask"), [8080])
    loose = findings.refusal(fs, "loose")
    assert loose.startswith("synguard: not attaching: inet filter input (hook input) handle 4: ")
    assert '"ct state new tcp flags != syn / fin,syn,rst,ack drop"' in loose and "\n" not in loose
    assert "handle 3" in findings.refusal(fs, "strict")
    assert findings.refusal(fs, "insert") is None
    assert findings.refusal(findings.check(load("f_accept_only"), [8080]), "strict") is None


def test_legacy_detection():
    # reading with iptables-legacy -L created an empty filter table: no finding
    assert legacy_of("f_legacy_read_only")["ipv4"]["names"].split() == ["filter"]
    assert findings.check(load("f_legacy_read_only"), [8080], legacy=legacy_of("f_legacy_read_only")) == []
    # names without the save output: an uncertain finding
    fs = legacy.legacy_findings({"ipv4": {"names": "filter\n", "save": None}})
    assert [(f.kind, f.certain) for f in fs] == [("legacy", False)]
    assert load("f_legacy")["nftables"][1:] == []  # nft shows nothing of them


def test_parse_nft_text_vmap_line():
    t = render.parse_nft_text(text("f_vmap_jump"))
    assert (
        t[("inet", "filter", "input", 9)]
        == "ct state vmap { invalid : drop, established : accept, related : accept }"
    )
    assert ("inet", "filter", "svc", 4) not in t


def test_a_rule_set_it_cannot_judge_gets_conntrack_entries(monkeypatch):
    """An nft JSON of a shape the check does not know makes attach take the
    safe side: conntrack entries (the ACK is then what a kernel-handled
    connection's is), never a traceback."""
    from synguard import firewall

    if firewall.host.read_sysctl(firewall.LOOSE) is None or firewall.cannot_insert():
        pytest.skip("no conntrack, or no conntrack kfuncs, here")
    monkeypatch.setattr(firewall, "ruleset", lambda: ({"nftables": [{"rule": 5}]}, None, {}))
    plan = firewall.check([8080], "eth0")
    assert plan.insert and "could not be judged (TypeError" in plan.reason
    with pytest.raises(firewall.FirewallRefusal):
        firewall.check([8080], "eth0", "off")
