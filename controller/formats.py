"""Text formats several modules read and write: ports, addresses,
numbers. A leaf: it imports nothing of synguard's."""


def num(x):
    """A number as people write it: 4194304, 0.25, never 4.1943e+06."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, int):
        return str(x)
    return ("%.6f" % x).rstrip("0").rstrip(".")


def parse_ports(text):
    """'80,443,8000-8010' -> sorted list; ValueError on anything else."""
    ports = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError("invalid port %r" % part) from None
        if first > last:
            raise ValueError("port range %r is reversed (write %d-%d)" % (part, last, first))
        if not (1 <= first <= last <= 65535):
            raise ValueError("port %r is outside 1..65535" % part)
        ports.update(range(first, last + 1))
    return sorted(ports)


def format_ports(ports):
    """[80, 443, 8000, ..., 8010] -> '80,443,8000-8010' (parse_ports' inverse)."""
    runs = []
    for p in sorted(ports):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in runs)


def parse_addr(text):
    """'HOST:PORT' or '[V6]:PORT' -> (host, port). ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected HOST:PORT, got %r" % text)
    if not 0 < int(port) < 65536:
        raise ValueError("port %s is outside 1..65535" % port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def metrics_address(text):
    """--metrics-addr as given -> HOST:PORT to bind. ':9717' (no host, as Go
    exporters take it) is every address, IPv4 and IPv6: [::]:9717.
    ValueError if malformed."""
    if text.startswith(":"):
        text = "[::]" + text
    parse_addr(text)
    return text
