"""iptables-legacy: tables nft cannot show. They are read (never made)
and each of their rules reported, unchecked."""

from __future__ import annotations

import subprocess

from .nft import MODES, Finding


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
        fam = "ip" if ipv == "ipv4" else "ip6"

        def finding(table, chain, rule, note="legacy rules are not checked", fam=fam, ipv=ipv):
            return Finding(
                kind="legacy",
                table=table,
                chain=chain,
                hook="",
                handle=None,
                rule=rule,
                family=fam,
                ipv=(ipv,),
                modes=MODES,
                certain=False,
                note=note,
            )

        save = d.get("save")
        if save is None:
            tool = "iptables" if ipv == "ipv4" else "ip6tables"
            out.append(
                finding(",".join(names), "", f"{tool}-legacy tables: {' '.join(names)}", "rules not read")
            )
            continue
        table = None
        for line in save.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                chain, pol = line[1:].split()[:2]
                if pol not in ("ACCEPT", "-"):
                    out.append(finding(table, chain, f"policy {pol}"))
            elif line.startswith("-A "):
                out.append(finding(table, line.split()[1], line.strip()))
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
