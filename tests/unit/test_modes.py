"""Monitor mode and the drain, through BPF_PROG_TEST_RUN: the switches in
sg_config.flags that `synguard set IFACE monitor=0|1` and a stop turn."""

from conftest import reset
from model import ack_for, handed_off, run, syn
from synguard import layout, libbpf, packets
from synguard.lab.support import CONFIG
from synguard.packets import ACK
from test_ratelimit import from_prefix
from test_xdp import OTHER_CASES, SYN_CASES

# What enforce mode says a frame gets: the frame's outcome and the replies.
JUDGED = set(layout.xdp_outcomes()) | {"rstsent", "rstlimited", "verified"}


def judged(maps, before):
    now = maps.read_counters()
    return {k: now[k] - before[k] for k in JUDGED if now[k] != before[k]}


def test_monitor_counts_what_enforce_does_and_passes_every_frame(dp):
    """The test_xdp table, once in enforce mode and once in monitor mode on
    the same keys: the same verdict counters, and in monitor mode every
    frame goes to the kernel untouched."""
    prog, maps = dp
    frames = list(SYN_CASES.values()) + [c[1] for c in OTHER_CASES]
    reset(prog, maps, syncookies_only=1)
    before = maps.read_counters()
    enforced = [run(prog.xdp_fd, f)[0] for f in frames]
    enforce_counts = judged(maps, before)
    reset(prog, maps, syncookies_only=1, monitor=1, keys=False)
    before = maps.read_counters()
    for f in frames:
        assert run(prog.xdp_fd, f) == (libbpf.XDP_PASS, f)
    assert judged(maps, before) == enforce_counts
    assert libbpf.XDP_TX in enforced and enforce_counts["sendcookie"] == len(SYN_CASES)


def test_monitor_counts_the_limit_it_would_apply(dp):
    prog, maps = dp
    reset(prog, maps, synack_rate=10, synack_burst=3, syncookies_only=1, monitor=1)
    before = maps.read_counters()
    frames = from_prefix("198.19.40", 5)
    for f in frames:
        assert run(prog.xdp_fd, f) == (libbpf.XDP_PASS, f)
    assert judged(maps, before) == {"sendcookie": 3, "ratelimited": 2}


def test_monitor_keeps_no_syncache_entries_and_hands_off_cookies_it_issued(dp):
    """Switched to monitor mode, synguard still completes the handshakes it
    answered in enforce mode (their ACKs carry its cookies), and makes no
    entry that would retransmit a SYN-ACK the client never had from it."""
    prog, maps = dp
    _, synack = run(prog.xdp_fd, syn(sport=5001))
    reset(prog, maps, monitor=1, keys=False)
    ack = ack_for(synack)
    assert run(prog.xdp_fd, ack) == (libbpf.XDP_PASS, ack) and handed_off(maps, ack)
    assert run(prog.xdp_fd, syn(sport=5002))[0] == libbpf.XDP_PASS
    assert maps.syncache_state.lookup(0).entries == 0


def test_draining_leaves_new_syns_to_the_kernel_and_completes_issued_cookies(dp):
    prog, maps = dp
    reset(prog, maps, syncookies_only=1)
    _, synack = run(prog.xdp_fd, syn(sport=6001))
    reset(prog, maps, syncookies_only=1, keys=False, flags=CONFIG["flags"] | layout.CF_DRAIN)
    before = maps.read_counters()
    new_syn, ack = syn(sport=6002), ack_for(synack)
    bogus = packets.tcp_frame("198.18.0.1", "198.18.0.2", 6003, 8080, seq=1, ack=2, flags=ACK)
    assert run(prog.xdp_fd, new_syn) == (libbpf.XDP_PASS, new_syn)
    assert run(prog.xdp_fd, ack) == (libbpf.XDP_PASS, ack) and handed_off(maps, ack)
    assert run(prog.xdp_fd, bogus) == (libbpf.XDP_PASS, bogus)  # maybe the kernel's own cookie
    assert judged(maps, before) == {"drained": 2, "recvcookie": 1}
