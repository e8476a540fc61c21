"""Which protected ports have an MPTCP listener, as sock_diag shows them.

bpf_sk_assign_tcp_reqsk refuses MPTCP listeners (sk_is_mptcp: -EINVAL), and
Go's net package listens with IPPROTO_MPTCP by default since Go 1.24. The
data path tells such a listener itself (bpf_skc_to_mptcp_sock, at every SYN)
and leaves it to the kernel; this is for telling the user which ports those
are: attach warns, status lists them. An MPTCP listener's TCP socket carries
the ULP "mptcp", which a TCP dump with INET_DIAG_INFO shows
(INET_DIAG_ULP_INFO; no capability needed).
"""

import socket

TCP_LISTEN = 10
INET_DIAG_INFO = 2
INET_ULP_INFO_NAME = 1


def _ulp_name(raw):
    """INET_ULP_INFO_NAME from INET_DIAG_ULP_INFO's nested attributes."""
    if isinstance(raw, str):  # pyroute2 hands 'hex' attributes over as "aa:bb:..."
        raw = bytes.fromhex(raw.replace(":", ""))
    off = 0
    while off + 4 <= len(raw):
        length, kind = (
            int.from_bytes(raw[off : off + 2], "little"),
            int.from_bytes(raw[off + 2 : off + 4], "little"),
        )
        if length < 4:
            break
        if kind & 0x3FFF == INET_ULP_INFO_NAME:
            return raw[off + 4 : off + length].split(b"\0", 1)[0].decode()
        off += (length + 3) & ~3
    return None


def listening(families=(socket.AF_INET, socket.AF_INET6)):
    """{port: True if any listener on it is MPTCP} for the TCP listeners of
    this network namespace."""
    from pyroute2 import DiagSocket  # 150 ms to import: only where needed

    ports = {}
    with DiagSocket() as ds:
        ds.bind()
        for family in families:
            for msg in ds.get_sock_stats(
                family=family, states=1 << TCP_LISTEN, extensions=1 << (INET_DIAG_INFO - 1)
            ):
                ulp = msg.get_attr("INET_DIAG_ULP_INFO")
                port = msg["idiag_sport"]
                ports[port] = ports.get(port, False) or (ulp is not None and _ulp_name(ulp) == "mptcp")
    return ports


def mptcp_ports(ports):
    """The ones of ports that have an MPTCP listener now."""
    wanted = set(ports)
    return sorted(p for p, mptcp in listening().items() if mptcp and p in wanted)
