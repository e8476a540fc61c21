"""Fleet mode's key schedule, and cookies crossing hosts through the data
path (BPF_PROG_TEST_RUN): host A answers the SYN, host B checks the ACK."""

import os
import stat

import pytest
from model import ack_for, run, syn
from synguard import fleet, keys, libbpf
from synguard.keys import FleetRotator, KeyRotator

P = 16.0  # rotation period

# A cookie the host cannot validate: the ACK gets the RST for a segment
# nobody knows, as a rehashed connection's segments do (XDP_TX).
REFUSED = libbpf.XDP_TX


def test_hkdf_matches_rfc5869_test_case_1():
    okm = fleet.hkdf_sha256(bytes([0x0B] * 22), bytes(range(0xF0, 0xFA)), 42, salt=bytes(range(13)))
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_epoch_keys_differ_and_repeat():
    m = fleet.MasterKeys(os.urandom(32))
    keys = [m.key_of(e, P) for e in range(100, 110)]
    assert len(set(keys)) == 10 and keys == [m.key_of(e, P) for e in range(100, 110)]
    assert fleet.MasterKeys(os.urandom(32)).key_of(100, P) != keys[0]


def install(maps, masters, now):
    s, _ = fleet.key_state(masters, P, now)
    maps.secrets.update(0, s)


def cross_host(prog, maps, masters_a, t_a, masters_b, t_b, client_seq=1000):
    """SYN answered by host A (clock t_a), its ACK checked by host B (t_b)."""
    install(maps, masters_a, t_a)
    verdict, synack = run(prog.xdp_fd, syn(seq=client_seq, sport=client_seq % 60000 + 1024))
    assert verdict == libbpf.XDP_TX
    if masters_b is None:
        KeyRotator(maps.secrets).install_initial()  # B is not in the fleet
    else:
        install(maps, masters_b, t_b)
    prog.bpf[b"handoffs"].clear()
    return run(prog.xdp_fd, ack_for(synack))[0]


T0 = 1_800_000_000 // 16 * 16.0  # an epoch boundary


@pytest.mark.parametrize(
    "offset_a,skew,valid",
    [
        (0.1, 0.0, True),
        (0.1, 0.95, True),  # B one period minus a bit ahead: next epoch
        (0.9, 0.95, True),  # B ahead across the boundary
        (0.1, -0.95, True),  # B behind: the previous epoch
        (0.9, -0.95, True),
        (0.5, 0.49, True),
        (0.1, 1.95, False),  # two epochs apart: never
        (0.1, -1.2, False),  # B at epoch e-2
        (0.9, -1.2, True),  # skew above one period, but the epochs are only one apart
        (0.5, 2.5, False),
    ],
)
def test_clock_skew_up_to_one_period_is_tolerated(cookies_only, offset_a, skew, valid):
    """Tolerated: hosts' epochs at most one apart, which any skew (plus the
    handshake's duration) below one period guarantees; two apart never."""
    prog, maps = cookies_only
    m = fleet.MasterKeys(os.urandom(32))
    t_a = T0 + offset_a * P
    verdict = cross_host(prog, maps, m, t_a, m, t_a + skew * P)
    assert verdict == (libbpf.XDP_PASS if valid else REFUSED)
    assert valid == (abs(int(t_a // P) - int((t_a + skew * P) // P)) <= 1)


def test_a_host_outside_the_fleet_rejects_the_cookie(cookies_only):
    prog, maps = cookies_only
    m = fleet.MasterKeys(os.urandom(32))
    assert cross_host(prog, maps, m, T0 + 3, None, None) == REFUSED
    assert cross_host(prog, maps, m, T0 + 3, fleet.MasterKeys(os.urandom(32)), T0 + 3) == REFUSED


def test_master_key_changeover_keeps_cookies_valid_across_the_switch(cookies_only):
    """Hosts get a file naming the next master key and the epoch it starts;
    across that epoch, cookies of either side of the switch validate."""
    prog, maps = cookies_only
    old, new = os.urandom(32), os.urandom(32)
    switch = T0 + 10 * P
    before_file = fleet.MasterKeys(old)
    changeover = fleet.MasterKeys(old, new, int(switch))
    after_file = fleet.MasterKeys(new)
    # Both sides of the switch, clocks up to most of a period apart.
    assert (
        cross_host(prog, maps, changeover, switch - 0.3 * P, changeover, switch + 0.5 * P) == libbpf.XDP_PASS
    )
    assert (
        cross_host(prog, maps, changeover, switch + 0.2 * P, changeover, switch - 0.6 * P) == libbpf.XDP_PASS
    )
    # The file only needs to reach every host before the switch: hosts still
    # on the old file agree with changeover hosts before it.
    assert (
        cross_host(prog, maps, before_file, switch - 2 * P, changeover, switch - 1.5 * P) == libbpf.XDP_PASS
    )
    # Once the old master is gone from the file, epochs before the switch are
    # derived from the new one: a host still minting with the old key fails.
    assert cross_host(prog, maps, before_file, switch + P, after_file, switch + P) == REFUSED
    assert cross_host(prog, maps, changeover, switch + 3 * P, after_file, switch + 3.2 * P) == libbpf.XDP_PASS


def test_rotator_writes_the_keys_before_the_flip(cookies_only):
    prog, maps = cookies_only
    m_path = "/tmp/synguard-fleet-test.key"
    write_key_file(m_path, fleet.generate())
    clock = [T0 + 15.0]
    r = FleetRotator(maps.secrets, P, m_path, clock=lambda: clock[0])
    r.install_initial()
    s1 = maps.secrets.lookup(0)
    assert s1.fleet == 1 and s1.active == int(clock[0] // P) & 1
    assert abs(r.due_in() - 1.0) < 1e-6
    clock[0] += 1.5
    r.rotate()
    s2 = maps.secrets.lookup(0)
    assert s2.active != s1.active and s2.rotations == s1.rotations + 1
    assert bytes(s2.keys[s1.active]) == bytes(s1.keys[s1.active])  # the old current is now the previous
    assert bytes(s2.keys[s2.active]) == bytes(s1.ahead)  # the old next is now the current
    os.unlink(m_path)


def test_each_key_source_says_why_it_will_not_rotate_on_request(cookies_only, tmp_path):
    _, maps = cookies_only
    path = str(tmp_path / "fleet.key")
    write_key_file(path, fleet.generate())
    for cookies, key, kind in (
        ("synguard", "", keys.KeyRotator),
        ("synguard", path, FleetRotator),
        ("kernel", "", keys.KernelCookies),
    ):
        source = keys.source_for(cookies, P, key)(maps.secrets)
        source.install_initial()
        assert type(source) is kind
        assert source.refused == keys.rotation_refused(cookies, maps.secrets.lookup(0).fleet)
    assert keys.rotation_refused("synguard", 0) is None


def write_key_file(path, text, mode=0o600):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


@pytest.mark.parametrize(
    "mode,text,message",
    [
        (0o640, None, "must be owned by root and mode 0600 (it is 0640"),
        (0o604, None, "must be owned by root and mode 0600 (it is 0604"),
        (0o600, 'key = "abcd"\n', "key must be 32 bytes as hex"),
        (
            0o600,
            'key = "%s"\nnext_key = "%s"\n' % ("00" * 32, "11" * 32),
            "next_key and next_from go together",
        ),
        (0o600, 'kee = "%s"\n' % ("00" * 32), "unknown key kee"),
        (0o600, "key = \n", "is not valid TOML"),
    ],
)
@pytest.mark.root
def test_bad_key_files_are_refused_without_showing_the_key(tmp_path, mode, text, message):
    path = str(tmp_path / "fleet.key")
    secret = "ab" * 32
    write_key_file(path, text or 'key = "%s"\n' % secret, mode)
    with pytest.raises(fleet.FleetKeyError) as e:
        fleet.load(path)
    assert message in str(e.value) and secret not in str(e.value)


@pytest.mark.root
def test_keygen_makes_a_root_only_file_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "fleet.key"
    r = subprocess.run(
        [sys.executable, "-m", "synguard.cli", "keygen", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(fleet.load(str(path)).key) == 32
    text = path.read_text()
    assert text not in r.stdout + r.stderr and text.split('"')[1] not in r.stdout + r.stderr
    again = subprocess.run(
        [sys.executable, "-m", "synguard.cli", "keygen", str(path)], capture_output=True, text=True
    )
    assert again.returncode == 2 and path.read_text() == text


@pytest.mark.root
def test_key_file_behind_symlinks_as_kubernetes_mounts_secrets(tmp_path):
    data = tmp_path / "..2026_11_26" / "fleet.key"
    data.parent.mkdir()
    write_key_file(str(data), fleet.generate(), 0o400)
    (tmp_path / "..data").symlink_to(data.parent.name)
    (tmp_path / "fleet.key").symlink_to("..data/fleet.key")
    assert len(fleet.load(str(tmp_path / "fleet.key")).key) == 32
