"""Living with the host's firewall: handed-off connections must pass it.

XDP answers the SYN, so netfilter never sees it: conntrack first sees the
client's ACK. With nf_conntrack_tcp_loose=1 (the default) conntrack picks
the connection up (ct state new, and it tracks its windows liberally), so
rule sets that accept the port pass it; but the common hardening rule
`ct state new tcp flags != syn drop` drops it, and with loose=0 it is ct
state invalid, dropped by `ct state invalid drop`. Measured here: every
handed-off connection dropped in those cases while synguard counted it
completed.

The mechanism: the tc program makes each handed-off connection's conntrack
entry (bpf_skb_ct_alloc .. bpf_ct_insert_entry, IPS_SEEN_REPLY), so the ACK
is ct state established, as a kernel-handled connection's is. Conntrack
never saw the window scale of that connection, and BPF may not set it, so
strict window tracking would mark its data invalid: while the entries are
made, attach sets net.netfilter.nf_conntrack_tcp_be_liberal=1 in the
namespace (restored on detach), or, with --conntrack noscale, offers no
window scale instead (exact tracking, windows up to 64 KB).

Entries are made only when the rule set needs them (findings.py reads it
from `nft -j list ruleset`, iptables-nft included, and the iptables-legacy
tables); a rule set that drops even such connections is refused with the
rule named.
"""

import json
import subprocess
from dataclasses import dataclass, field

from .. import host, kfunc, layout
from . import findings as rules
from .legacy import read_legacy

OPTIONS = ("auto", "noscale", "off")
LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"
LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
CAP_SYS_ADMIN = 21


class FirewallRefusal(Exception):
    """The rule set drops handed-off connections and nothing synguard may
    do gets them through: one line naming the rule and the fix."""


@dataclass
class Plan:
    """What attach does about the firewall."""

    insert: bool = False  # the tc program makes the conntrack entries
    noscale: bool = False  # ... and XDP offers no window scale (else be_liberal)
    warnings: list = field(default_factory=list)
    reason: str = ""  # why entries are made: the rule that needs them

    def config_flags(self, flags):
        """sg_config.flags for this plan."""
        if self.insert:
            flags |= layout.CF_CONNTRACK
            if self.noscale:
                flags &= ~layout.CF_WSCALE
        return flags

    def apply(self, sysctls):
        """Set the sysctl the plan needs (recorded in sysctls for detach);
        returns the lines to log."""
        if not self.insert:
            return []
        notes = ["making the conntrack entries of handed-off connections: %s" % self.reason]
        if self.noscale:
            notes.append("offering no window scale, so that conntrack tracks their windows exactly")
        elif host.set_sysctl(LIBERAL, "1", sysctls):
            notes.append("set %s=1 (conntrack cannot know their window scale; restored on detach)" % LIBERAL)
        return notes


def _nft(*args):
    try:
        r = subprocess.run(["nft", *args], capture_output=True, text=True, check=False)
    except OSError:
        return None  # no nft: no nftables rules to read
    return r.stdout if r.returncode == 0 else None


def ruleset():
    """(parsed `nft -j list ruleset` or {}, `nft -a list ruleset` or None,
    the iptables-legacy tables) of this network namespace."""
    text = _nft("-j", "list", "ruleset")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    return data, _nft("-a", "list", "ruleset"), read_legacy()


def _has_sys_admin():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def cannot_insert():
    """Why the tc program cannot make conntrack entries here; '' if it can."""
    found = [kfunc.find(name) for name in kfunc.CONNTRACK_KFUNCS]
    if not all(found):
        return "this kernel has no conntrack kfuncs (Linux >= 6.0, nf_conntrack loaded)"
    if any(k.module for k in found) and not _has_sys_admin():
        return "the conntrack kfuncs are in the nf_conntrack module, whose BTF needs CAP_SYS_ADMIN to use"
    return ""


def check(ports, ifname, option="auto"):
    """The Plan for protecting ports on ifname; FirewallRefusal if the rule
    set drops handed-off connections whatever synguard does."""
    loose = host.read_sysctl(LOOSE)
    if loose is None:
        return Plan()  # no conntrack here: nothing tracks the ACK
    data, text, legacy = ruleset()
    mode = "loose" if loose[0] != "0" else "strict"
    try:
        findings = rules.check(data, ports, ifname=ifname, nft_text=text, legacy=legacy)
    except Exception as e:  # a rule set of a shape the check does not know
        # Entries make the ACK what any rule set that takes the port lets
        # through: the safe side where the rule set cannot be judged.
        findings, why = [], "the rule set could not be judged (%s: %s)" % (type(e).__name__, e)
    else:
        blocking = [f for f in findings if mode in f.modes]
        if not blocking:
            return Plan(warnings=_warnings(findings))
        why = "%s: %s" % (blocking[0].message(), rules.STATE_NOTES[mode])
    # Legacy tables cannot be read, but an established ACK is what any rule
    # set that takes the port lets through: only what nft shows dropping
    # even that is a refusal.
    hard = [f for f in findings if "insert" in f.modes and f.kind != "legacy"]
    if hard:
        raise FirewallRefusal(
            "the firewall drops handed-off connections: %s, even with synguard's conntrack entries; "
            "exempt the protected ports from that rule" % hard[0].message()
        )
    if option == "off":
        raise FirewallRefusal(
            "the firewall drops handed-off connections: %s; --conntrack auto (or noscale) makes their "
            "conntrack entries so that it does not" % why
        )
    reason = cannot_insert()
    if reason:
        raise FirewallRefusal(
            "the firewall drops handed-off connections: %s; making their conntrack entries is not "
            "possible: %s" % (why, reason)
        )
    return Plan(insert=True, noscale=option == "noscale", warnings=_warnings(findings), reason=why)


def _warnings(findings):
    return [f.message() for f in findings if f.kind in ("new_accept_limit", "notrack")]
