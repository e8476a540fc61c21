"""What the firewall check knows of nftables' language: the kinds of
finding, the modes synguard runs conntrack in, TCP flags, protocols and xt
names, and the Finding a check reports."""

from __future__ import annotations

import dataclasses

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
