"""The syncache on a wire: synguard attached natively in the server namespace,
SYN-ACKs captured where the client is, real kernel TCP clients where a
client is involved. Spoofed sources (198.19.0.0/16) are for half-open
connections nobody completes."""

import json
import signal
import socket
import time

import pytest
from synguard import packets
from synguard.lab import netns
from synguard.lab.support import status, wait_until
from synguard.lab.testbed import SERVER4, Capture, EchoServer, Testbed, spoofed_syns
from synguard.packets import ACK, RST, SYN

pytestmark = pytest.mark.netns
PORT = 8080
BASE = 0.2  # --rexmtbase: retransmissions at +0.2, +0.6, +1.4 s, stale at +3.0 s


def listing(bed):
    r = bed.synguard_run("list", bed.server_if, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def set_(bed, *assignments):
    r = bed.synguard_run("set", bed.server_if, *assignments)
    assert r.returncode == 0, r.stderr


def spoofed_syn(src, sport, seq=1000, tsval=555):
    return packets.tcp_frame(
        src,
        SERVER4,
        sport,
        PORT,
        seq=seq,
        flags=SYN,
        options=packets.tcp_options(mss=1460, wscale=7, sack=True, ts=(tsval, 0)),
    )


def synacks_to(src, sport):
    def match(frame):
        try:
            s = packets.parse_frame(frame)
        except (ValueError, IndexError):
            return False
        return s.flags == SYN | ACK and str(s.dst) == src and s.dport == sport

    return match


@pytest.fixture(scope="module")
def bed():
    with Testbed() as b:
        srv = EchoServer(b, PORT)
        proc = b.attach([PORT], "--mode", "native", "--no-metrics", "--rexmtbase", str(BASE))
        b.srv, b.proc = srv, proc
        try:
            yield b
        finally:
            b.proc.send_signal(signal.SIGQUIT)
            assert b.proc.wait(30) == 0
            srv.close()


@pytest.fixture
def capture(bed):
    c = Capture(bed)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def default_settings(bed):
    yield
    set_(bed, "syncookies=1", "syncookies_only=0", "cachelimit=15360", "bucketlimit=30", "pausetime=16")


def test_unanswered_syn_is_listed_retransmitted_on_schedule_and_expires(bed, capture):
    before = status(bed)["counters"]
    src, sport = "198.19.1.1", 12345
    t0 = time.monotonic()
    bed.flood([spoofed_syn(src, sport)], seconds=1)
    asked = time.monotonic() - t0
    rows = [r for r in listing(bed) if r["remote"] == "%s:%d" % (src, sport)]
    answered = time.monotonic() - t0
    assert len(rows) == 1 and rows[0]["state"] == "SYN_RECEIVED"
    # `list` is a process of its own: on a loaded machine it may read the
    # entry after the first retransmission is due.
    due = (BASE, 3 * BASE, 7 * BASE)
    low = sum(d + 0.2 < asked for d in due)
    high = sum(d - 0.02 <= answered for d in due)
    assert low <= rows[0]["retransmits"] <= high, (asked, answered, rows[0])
    assert (rows[0]["mss"], rows[0]["wscale"], rows[0]["sack"], rows[0]["timestamps"]) == (
        1460,
        7,
        True,
        True,
    )

    got = capture.collect(3.4 - (time.monotonic() - t0), synacks_to(src, sport))
    times = [round(t - t0, 2) for t, _ in got]
    assert len(got) == 4, times
    assert all(frame == got[0][1] for _, frame in got), "retransmissions are byte-identical"
    for seen, due in zip(times[1:], (BASE, 3 * BASE, 7 * BASE)):
        assert due - 0.02 <= seen <= due + 0.2, times
    assert packets.parse_frame(got[0][1]).tcp_csum_ok

    time.sleep(max(0.0, 15 * BASE + 0.3 - (time.monotonic() - t0)))  # the entry's expiry is what is tested
    assert not [r for r in listing(bed) if r["remote"] == "%s:%d" % (src, sport)]
    after = status(bed)["counters"]
    assert after["retransmitted"] - before["retransmitted"] == 3
    assert after["stale"] - before["stale"] == 1


def test_duplicate_syn_gets_the_same_iss(bed, capture):
    src, sport = "198.19.2.2", 2222
    before = status(bed)["counters"]
    bed.flood([spoofed_syn(src, sport, tsval=1)], seconds=1)
    bed.flood([spoofed_syn(src, sport, tsval=2)], seconds=1)
    got = capture.collect(0.15, synacks_to(src, sport))
    assert len(got) == 2
    a, b = (packets.parse_frame(f) for _, f in got)
    assert a.seq == b.seq and (a.options["ts"][1], b.options["ts"][1]) == (1, 2)
    assert status(bed)["counters"]["dupsyn"] - before["dupsyn"] == 1
    assert len([r for r in listing(bed) if r["remote"] == "%s:%d" % (src, sport)]) == 1


def test_rst_in_window_removes_the_entry_out_of_window_does_not(bed, capture):
    src = "198.19.3.3"
    bed.flood([spoofed_syn(src, 3000, seq=7000), spoofed_syn(src, 3001, seq=7000)], seconds=1)

    def rst(sport, seq):
        return packets.tcp_frame(src, SERVER4, sport, PORT, seq=seq, flags=RST)

    bed.flood([rst(3000, 7001), rst(3001, 7000 + 70000)], seconds=1)
    assert wait_until(lambda: "%s:3000" % src not in {r["remote"] for r in listing(bed)}, 5)
    assert "%s:3001" % src in {r["remote"] for r in listing(bed)}


def test_icmp_unreachable_marks_the_entry(bed, capture):
    src, sport = "198.19.4.4", 4444
    bed.flood([spoofed_syn(src, sport)], seconds=1)
    synack = capture.collect(0.15, synacks_to(src, sport))[0][1]
    bed.flood([packets.icmp_unreachable(synack, code=1, router="198.18.0.1")], seconds=1)
    remote = "%s:%d" % (src, sport)
    assert wait_until(lambda: any(r["unreach"] for r in listing(bed) if r["remote"] == remote), 5)


def _client_sock(bed):
    with netns.netns(bed.client_ns):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_real_client_gets_exact_options_from_the_syncache(bed):
    """MSS 1410 and window scale 11 are in neither cookie table: through the
    syncache the accepted socket has them exactly; cookie-only it has the
    tables' 1400 and 10."""
    with netns.netns(bed.client_ns), open("/proc/sys/net/ipv4/tcp_rmem") as f:
        rmem = f.read().strip()
    bed.sysctl(bed.client_ns, "net.ipv4.tcp_rmem", "4096 131072 67108864")  # client wscale 11
    with netns.netns(bed.client_ns):
        from synguard import kernelconf

        assert kernelconf.kernel_wscale() == 11
    netns.set_mtu(bed.client_ns, bed.client_if, 1450)  # MSS 1410
    try:
        for mode, mss, ws, counter in (("0", 1410, 11, "expanded"), ("1", 1400, 10, "recvcookie")):
            set_(bed, "syncookies_only=" + mode)
            before = status(bed)["counters"]
            n = len(bed.srv.accepted)
            assert bed.connect(SERVER4, PORT, payload=b"z" * 20000)["echo_ok"]
            assert wait_until(lambda n=n: len(bed.srv.accepted) > n, 5)  # its accept thread records it
            info = bed.srv.accepted[n]["info"]
            assert (info["snd_mss"], info["snd_wscale"]) == (mss - 12, ws), mode
            after = status(bed)["counters"]
            assert after[counter] - before[counter] == 1
            assert after["completed"] - before["completed"] == 1
    finally:
        netns.set_mtu(bed.client_ns, bed.client_if, 1500)
        bed.sysctl(bed.client_ns, "net.ipv4.tcp_rmem", rmem)


def test_full_cache_still_completes_real_connections_through_cookies(bed):
    entries = status(bed)["syncache"]["entries"]
    set_(bed, "cachelimit=%d" % (entries + 5), "pausetime=0")
    before = status(bed)["counters"]
    bed.flood(list(spoofed_syns(200, PORT, seed=11)), seconds=5)
    assert wait_until(lambda: status(bed)["counters"]["sendcookie"] - before["sendcookie"] >= 200, 5)
    st = status(bed)
    c = st["counters"]
    assert st["syncache"]["entries"] <= entries + 5
    # each SYN got an entry or none (older entries expiring meanwhile make a little room)
    assert (c["added"] - before["added"]) + (c["zonefail"] - before["zonefail"]) == 200
    assert c["zonefail"] - before["zonefail"] >= 150
    assert c["sendcookie"] - before["sendcookie"] == 200
    set_(bed, "cachelimit=1")  # and stays full while flood entries expire
    for _ in range(20):
        assert bed.connect(SERVER4, PORT)["echo_ok"]
    after = status(bed)["counters"]
    assert after["recvcookie"] - before["recvcookie"] == 20
    assert after["completed"] - before["completed"] == 20


def test_syncookies_0_drops_syns_beyond_the_limit(bed):
    set_(bed, "syncookies=0", "cachelimit=1", "pausetime=0")
    # The entry that fills the cache must outlive the connect below: not
    # one from an earlier test that expires meanwhile (3 s after it came).
    assert wait_until(lambda: status(bed)["syncache"]["entries"] == 0, 15 * BASE + 1)
    bed.flood(list(spoofed_syns(10, PORT, seed=12)), seconds=2)  # make sure it is full
    before = status(bed)["counters"]
    with pytest.raises(OSError):
        bed.connect(SERVER4, PORT, timeout=1.5)  # SYN and its retransmission dropped
    after = status(bed)["counters"]
    assert after["dropped"] - before["dropped"] >= 2
    assert after["sendcookie"] == before["sendcookie"]
    set_(bed, "syncookies=1")
    assert bed.connect(SERVER4, PORT)["echo_ok"]


def test_pause_engages_is_shown_and_expires(bed):
    entries = status(bed)["syncache"]["entries"]
    set_(bed, "cachelimit=%d" % (entries + 1), "pausetime=1")
    bed.flood(list(spoofed_syns(20, PORT, seed=13)), seconds=2)
    sc = status(bed)["syncache"]
    assert sc["paused"] and 0 < sc["pause_remaining_seconds"] <= 1
    assert bed.connect(SERVER4, PORT)["echo_ok"]  # cookies carry it
    time.sleep(sc["pause_remaining_seconds"] + 0.4)  # the pause's end is what is tested
    sc2 = status(bed)["syncache"]
    assert not sc2["paused"] and sc2["pauses"] == sc["pauses"]


def test_set_refuses_bad_values_and_leaves_the_settings(bed):
    before = status(bed)["settings"]
    for bad, message in (
        ("cachelimit=70000", "cachelimit can grow to 65536 while the data path stays attached"),
        ("rexmtlimit=11", "rexmtlimit must be within 0..10, not 11"),
        ("syncookies=2", "syncookies must be within 0..1, not 2"),
        ("rexmtbase=fast", "rexmtbase: 'fast' is not a number"),
        ("nosuch=1", "unknown setting 'nosuch'"),
        ("ratelimit=-1", "ratelimit must be within 0..10000000, not -1"),
        ("prefix4=33", "prefix4 must be within 0..32, not 33"),
        ("prefix6=129", "prefix6 must be within 0..128, not 129"),
        ("ratelimit_burst=0", "ratelimit_burst must be within 1..10000000, not 0"),
        ("cachelimit", "expected KEY=VALUE, got 'cachelimit'"),
    ):
        r = bed.synguard_run("set", bed.server_if, "bucketlimit=7", bad)
        assert r.returncode == 2, bad
        assert r.stderr.startswith("synguard: error: " + message) and len(r.stderr.splitlines()) == 1
    assert status(bed)["settings"] == before


def test_controller_logged_each_pause_once(bed):
    """Runs last in this module: the controller's log, read at its exit."""
    bed.proc.send_signal(signal.SIGQUIT)
    assert bed.proc.wait(30) == 0
    log = bed.proc.stderr.read()
    bed.proc = bed.attach([PORT], "--mode", "native", "--no-metrics", "--rexmtbase", str(BASE))
    assert log.count("syncache overflow: cookies only for the next") == log.count("syncache resumed") >= 1
