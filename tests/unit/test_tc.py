"""The tc program through BPF_PROG_TEST_RUN, with bpf_sk_assign_tcp_reqsk
mocked (MOCK_REQSK, a function-like macro given to the compiler: it
answers -skb->mark, as test runs are no tc ingress, where the real one
refuses everything): every path of it, and the conntrack entry it makes."""

import ipaddress
import socket
import struct
import time

import pytest
from model import CLIENT4, CLIENT6, SERVER4, SERVER6, ack_for, handoff, run, syn
from synguard import layout, libbpf, packets
from synguard.lab import netns, support

PORT = support.PORT
TC_ACT_OK, TC_ACT_UNSPEC = 0, 0xFFFFFFFF
# The call of the kfunc, replaced: the product's source knows nothing of it.
MOCK_REQSK = "bpf_sk_assign_tcp_reqsk(skb,sk,attrs,sz)=(-(int)(skb)->mark)"
EINVAL = 22


@pytest.fixture(scope="module")
def tcdp(unit_ns):
    support.load_conntrack()  # the kfuncs are nf_conntrack's
    with support.compiled("tc", conntrack=True, defines=(MOCK_REQSK,)) as (dp, maps):
        yield dp, maps


@pytest.fixture
def tc(tcdp, unit_ns):
    dp, maps = tcdp
    support.configure(dp, maps, syncookies_only=1, synack_rate=0)
    with netns.netns(unit_ns):
        yield dp, maps


def tc_run(dp, frame, mark=0):
    ctx = struct.pack("<III", 0, 0, mark) + bytes(20)  # __sk_buff: len, pkt_type, mark, ...
    return libbpf.test_run(dp.tc_fd, frame, ctx=ctx)[0]


def delta(maps, before):
    now = maps.read_counters()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


def handed_off_ack(dp, maps, frame):
    """The ACK for frame's SYN-ACK, after XDP has validated it."""
    verdict, synack = run(dp.xdp_fd, frame)
    assert verdict == libbpf.XDP_TX
    ack = ack_for(synack)
    assert run(dp.xdp_fd, ack)[0] == libbpf.XDP_PASS and handoff(maps, ack).pending
    return ack


@pytest.mark.parametrize("client,server", [(CLIENT4, SERVER4), (CLIENT6, SERVER6)])
def test_a_handed_off_ack_makes_one_request_socket(tc, client, server):
    dp, maps = tc
    ack = handed_off_ack(dp, maps, syn(client, server))
    before = maps.read_counters()
    assert tc_run(dp, ack) == TC_ACT_OK
    assert not handoff(maps, ack).pending
    assert tc_run(dp, ack) == TC_ACT_UNSPEC  # taken: the next segment goes on plain
    assert delta(maps, before) == {"completed": 1}


def test_what_is_not_ours_is_left_to_the_filters_after_ours(tc):
    dp, maps = tc
    data = packets.tcp_frame(CLIENT4, SERVER4, 40000, PORT, seq=5, ack=6, flags=packets.ACK, payload=b"x")
    other = packets.tcp_frame(CLIENT4, SERVER4, 40000, 9999, seq=5, ack=6, flags=packets.ACK)
    udp = bytearray(syn())
    udp[23] = 17
    ack = handed_off_ack(dp, maps, syn(sport=41000))
    wrong_seq = bytearray(ack)
    wrong_seq[38:42] = (int.from_bytes(ack[38:42], "big") + 1).to_bytes(4, "big")
    before = maps.read_counters()
    for frame in (data, other, bytes(udp), syn(), bytes(wrong_seq)):
        assert tc_run(dp, frame) == TC_ACT_UNSPEC
    assert delta(maps, before) == {}
    assert handoff(maps, ack).pending  # the wrong seq did not take it


def test_a_refused_request_socket_is_counted_aborted(tc):
    dp, maps = tc
    ack = handed_off_ack(dp, maps, syn(sport=42000))
    before = maps.read_counters()
    assert tc_run(dp, ack, mark=EINVAL) == TC_ACT_UNSPEC
    assert delta(maps, before) == {"aborted": 1}


def test_a_socket_made_meanwhile_takes_the_segment(tc):
    """The kernel has a socket for the 4-tuple by the time tc sees the ACK
    (another segment of the handshake made it): raced, passed on."""
    dp, maps = tc
    lst = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    try:
        cport, sport = c.getsockname()[1], lst.getsockname()[1]
        maps.set_ports([PORT, sport])
        frame = packets.tcp_frame("127.0.0.1", "127.0.0.1", cport, sport, seq=100, ack=200, flags=packets.ACK)
        key = layout.Flow()
        raw = ipaddress.ip_address("127.0.0.1").packed * 2 + struct.pack("!HH", cport, sport)
        struct.pack_into("%ds" % len(raw), key, 0, raw)
        maps.handoffs.update(key, layout.Handoff(at_ns=1, isn=99, pending=1))
        before = maps.read_counters()
        assert tc_run(dp, frame) == TC_ACT_UNSPEC
        assert delta(maps, before) == {"raced": 1}
    finally:
        for s in (c, srv, lst):
            s.close()


def conntrack_entries():
    with open("/proc/thread-self/net/nf_conntrack") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("client,server", [(CLIENT4, SERVER4), (CLIENT6, SERVER6)])
def test_the_conntrack_entry_is_the_handshakes(tc, client, server):
    """With conntrack entries on (a firewall needs them), a completed
    hand-off leaves the entry the handshake would have: client -> server
    as the original direction, a reply seen, so the ACK is established."""
    dp, maps = tc
    cfg = maps.config.lookup(0)
    cfg.flags |= layout.CF_CONNTRACK
    maps.config.update(0, cfg)
    sport = 43000 + (server == SERVER6)
    ack = handed_off_ack(dp, maps, syn(client, server, sport=sport))
    before = maps.read_counters()
    assert tc_run(dp, ack) == TC_ACT_OK
    assert delta(maps, before) == {"completed": 1, "ctinserted": 1}
    (line,) = [e for e in conntrack_entries() if "sport=%d " % sport in e]
    src = ipaddress.ip_address(client).exploded if ":" in client else client
    dst = ipaddress.ip_address(server).exploded if ":" in server else server
    assert "src=%s dst=%s sport=%d dport=%d" % (src, dst, sport, PORT) in line
    assert "src=%s dst=%s sport=%d dport=%d" % (dst, src, PORT, sport) in line  # the reply direction
    assert "[UNREPLIED]" not in line
    # a second hand-off of the same 4-tuple (past XDP's 10 ms window) finds the entry there
    time.sleep(0.02)
    ack2 = handed_off_ack(dp, maps, syn(client, server, sport=sport, seq=0x22222222))
    before = maps.read_counters()
    assert tc_run(dp, ack2) == TC_ACT_OK
    assert delta(maps, before) == {"completed": 1, "ctfailed": 1}


def test_no_conntrack_entry_unless_switched_on(tc):
    dp, maps = tc
    ack = handed_off_ack(dp, maps, syn(sport=44000))
    before = maps.read_counters()
    assert tc_run(dp, ack) == TC_ACT_OK
    assert delta(maps, before) == {"completed": 1}
    assert not [e for e in conntrack_entries() if "sport=44000 " in e]
