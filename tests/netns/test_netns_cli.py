"""The CLI against a running controller in the namespace test bed: rotate,
top, set, list, detach, and what a user without root is told."""

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from synguard.lab import netns, testbed
from synguard.lab.testbed import SERVER4, EchoServer, Testbed, spoofed_syns
from synguard.maps import Maps

pytestmark = pytest.mark.netns
PORT = 8080


@pytest.fixture(scope="module")
def protected():
    args = ("--no-metrics", "--rotate-seconds", "600", "--rexmtbase", "30")
    with testbed.protected([PORT], *args) as (bed, _, proc):
        yield bed, proc


class Clients:
    """Real connections from the client, one after another, until stop()."""

    def __init__(self, bed):
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._connect, args=(bed,))
        self._thread.start()

    def _connect(self, bed):
        while not self._done.is_set():
            bed.connect(SERVER4, PORT)

    def stop(self):
        self._done.set()
        self._thread.join()


def as_nobody(bed, *args):
    def enter():
        fd = os.open(netns.ns_path(bed.server_ns), os.O_RDONLY)
        netns._setns(fd)
        os.close(fd)
        os.setgid(65534)
        os.setuid(65534)

    return subprocess.run(
        [sys.executable, "-m", "synguard.cli", *args],
        preexec_fn=enter,
        capture_output=True,
        text=True,
        timeout=60,
    )


def secrets(bed):
    with Maps(bed.pins()) as maps:
        s = maps.secrets.lookup(0)
        return s.rotations, s.active, [(k.k0, k.k1) for k in s.keys]


def test_rotate_now(protected):
    bed, proc = protected
    rotations, active, keys = secrets(bed)
    r = bed.synguard_run("rotate", bed.server_if)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(
        "synguard: %s: new cookie key (rotation %d, from pid %d)" % (bed.server_if, rotations + 1, proc.pid)
    )
    after = secrets(bed)
    assert after[0] == rotations + 1 and after[1] == active ^ 1
    assert after[2][active] == keys[active]  # the key before stays for one more period
    assert after[2][active ^ 1] != keys[active ^ 1]
    assert bed.connect(SERVER4, PORT)["echo_ok"]


def test_top_prints_count_lines(protected):
    bed, _ = protected
    clients = Clients(bed)
    try:
        r = bed.synguard_run("top", bed.server_if, "0.5", "4")
    finally:
        clients.stop()
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].split() == ["answered/s", "ratelimited/s", "handoffs/s", "badacks/s", "entries", "paused"]
    rows = [line.split() for line in lines[1:]]
    assert all(len(row) == 6 and row[5] in ("yes", "no") for row in rows)
    assert any(int(row[0]) > 0 and int(row[2]) > 0 for row in rows)  # real clients: SYNs answered, handed off


def top_on_a_pty(bed, *args):
    """synguard top ARGS in the server namespace with a new pty as its
    controlling terminal (stdin, stdout, stderr), 100x30. Returns
    (Popen, master fd, slave fd). nsenter and setsid -c exec in place, so
    the Popen's pid is top's; no preexec_fn (this process has threads)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        ["nsenter", "--net=" + netns.ns_path(bed.server_ns), "setsid", "--ctty"]
        + [sys.executable, "-m", "synguard.cli", "top", bed.server_if, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    return proc, master, slave


def read_pty(master, until, timeout):
    """What the pty shows, read until until(text) holds or timeout."""
    out = b""
    deadline = time.monotonic() + timeout
    while not until(out.decode(errors="replace")) and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                out += os.read(master, 65536)
            except OSError:  # EIO: every slave fd closed
                break
    return out.decode(errors="replace")


@pytest.mark.parametrize("end", ["q", "Ctrl-C", "SIGTERM"])
def test_top_screen_refreshes_and_ends_restoring_the_terminal(protected, end):
    from synguard import terminal

    bed, _ = protected
    clients = Clients(bed)
    proc, master, slave = top_on_a_pty(bed, "0.5")
    try:
        before = termios.tcgetattr(slave)
        frames = lambda text: text.split(terminal.HOME_CLEAR)[1:]  # noqa: E731
        shown = read_pty(master, lambda text: len(frames(text)) >= 5, 30)
        during = termios.tcgetattr(slave)
        if end == "q":
            os.write(master, b"q")
        elif end == "Ctrl-C":
            os.write(master, b"\x03")  # the line discipline makes it SIGINT
        else:
            proc.send_signal(signal.SIGTERM)
        # Read on while it ends, as a terminal does: unread output could
        # block top's last writes. What it printed goes in the message.
        shown += read_pty(master, lambda text: proc.poll() is not None and text.endswith(terminal.LEAVE), 10)
        assert proc.poll() == 0, (proc.poll(), shown[-300:])
    finally:
        clients.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    # top had the terminal in cbreak mode, without echo, on its alternate
    # screen; after it, everything is as before.
    assert during[3] & (termios.ECHO | termios.ICANON) == 0 and during[3] & termios.ISIG
    assert after == before
    assert shown.startswith(terminal.ENTER) and shown.endswith(terminal.LEAVE), repr(shown[-200:])
    assert "Traceback" not in shown and "error" not in shown
    # The last may be cut short: Ctrl-C flushes the tty's output queue.
    screens = [f.replace("\r\n", "\n") for f in frames(shown[: -len(terminal.LEAVE)])][:-1]
    assert len(screens) >= 4
    heads = [s.splitlines()[0] for s in screens]
    assert all(
        re.fullmatch(r"synguard top %s, every 0.5s \(q or Ctrl-C ends\)  \d\d:\d\d:\d\d" % bed.server_if, h)
        for h in heads
    ), heads
    rates = []
    for screen in screens[1:]:  # the first is up before an interval has passed: no rates yet
        lines = screen.splitlines()
        assert len(lines) == 8 and all(len(line) <= 100 for line in lines)
        assert re.fullmatch(r" +\d+    syncache entries \(limit \d+\)", lines[6])
        rates.append(
            {line.split("/s", 1)[1].split(" (")[0].strip(): int(line.split("/s")[0]) for line in lines[2:6]}
        )
    assert screens[0].splitlines()[2].strip().startswith("-/s  SYNs answered")
    assert set(rates[0]) == {
        "SYNs answered",
        "SYNs dropped by the reflection limit",
        "handshakes handed to the kernel",
        "ACKs with a bogus cookie, dropped",
    }
    # Real clients throughout: SYNs answered and handed off, on the screen.
    assert any(r["SYNs answered"] > 0 and r["handshakes handed to the kernel"] > 0 for r in rates), rates


def test_list_fits_100_columns(protected):
    bed, _ = protected
    bed.flood(spoofed_syns(200, PORT, seed=31), 5)  # half-open entries (rexmtbase 30 keeps them)
    r = bed.synguard_run("list", bed.server_if)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) > 100 and all(len(line) <= 100 for line in lines)
    assert lines[1].startswith("tcp4 %s:%d " % (SERVER4, PORT))


def test_set_says_how_long_it_lasts(protected):
    bed, _ = protected
    r = bed.synguard_run("set", bed.server_if, "ratelimit=10000000")
    assert r.returncode == 0
    assert "ratelimit=10000000" in r.stdout and "e+" not in r.stdout
    assert r.stderr.startswith("synguard: this lasts until the controller reloads or stops")
    r = bed.synguard_run("set", bed.server_if, "syncookies=0", "syncookies_only=1")
    assert r.returncode == 2 and r.stderr.startswith("synguard: error: syncookies_only=1 needs syncookies=1")


def live_settings(bed):
    from synguard.settings import current

    with Maps(bed.pins()) as maps:
        return current(maps.config.lookup(0))


def test_set_save_without_a_config_file(protected):
    bed, _ = protected
    before = live_settings(bed)
    r = bed.synguard_run("set", bed.server_if, "rexmtlimit=2", "--save")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        "synguard: error: --save: the controller of {0} was started without --config, so there is no "
        "file to save into: start it with attach {0} --config FILE (deploy/synguard.example.toml), or "
        "leave out --save\n".format(bed.server_if)
    )
    assert live_settings(bed) == before


CONFIG = """# synguard on the test bed's server link
ports = [8080]
metrics = false                   # no endpoint
rotate_seconds = 600

[settings]
cachelimit = 1000                 # half-open entries in all
rexmtlimit = 3                    # retransmissions
"""


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    """A controller started with --config FILE (and one setting as a flag)."""
    conf = tmp_path_factory.mktemp("conf") / "server.toml"
    conf.write_text(CONFIG)
    with Testbed() as bed:
        srv = EchoServer(bed, PORT)
        proc = bed.attach([PORT], "--config", str(conf), "--rexmtbase", "30")
        try:
            yield bed, conf
        finally:
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
            srv.close()


def test_set_save_writes_the_config_file(configured):
    bed, conf = configured
    conf.write_text(CONFIG)
    r = bed.synguard_run("set", bed.server_if, "rexmtlimit=2", "bucketlimit=7", "--save")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("synguard: %s: syncookies=1 " % bed.server_if) and "rexmtlimit=2" in lines[0]
    assert lines[1:] == ["synguard: %s: saved bucketlimit=7 rexmtlimit=2 in %s" % (bed.server_if, conf)]
    assert conf.read_text() == CONFIG.replace("rexmtlimit = 3 ", "rexmtlimit = 2 ") + "bucketlimit = 7\n"
    live = live_settings(bed)
    assert (live["rexmtlimit"], live["bucketlimit"]) == (2, 7)
    # A setting the controller has as a flag: saved, and the user told
    # that the flag wins when it starts again.
    r = bed.synguard_run("set", bed.server_if, "rexmtbase=20", "--save")
    assert r.returncode == 0 and "rexmtbase = 20\n" in conf.read_text()
    assert r.stderr == (
        "synguard: warning: the controller's command line has --rexmtbase, which wins over %s when it "
        "starts again\n" % conf
    )
    assert live_settings(bed)["rexmtbase"] == 20


def read_only(bed, directory, *args):
    """set ARGS with the config file's directory mounted read-only (as
    ProtectSystem=strict, or a read-only /etc, has it)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return netns.run(
        bed.server_ns,
        ["unshare", "-m", "sh", "-c", script, "sh", directory, sys.executable, "-m", "synguard.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "content,assignment,message",
    [
        ("ports = [8080\n", "rexmtlimit=1", "--save: {conf} is not valid TOML: "),
        (
            CONFIG.replace("[settings]", "[settings]\nsyncookies = 0"),
            "syncookies_only=1",
            "--save: {conf} would then say: syncookies_only=1 needs syncookies=1",
        ),
        (CONFIG, "read-only", "--save: cannot write {conf}: Read-only file system; nothing changed"),
        (CONFIG, "rename fails", "--save: cannot write {conf}: Input/output error; nothing changed"),
    ],
)
def test_set_save_changes_nothing_on_bad_input(configured, content, assignment, message):
    bed, conf = configured
    conf.write_text(content)
    before = live_settings(bed)
    args = ["set", bed.server_if, "rexmtlimit=1", "cachelimit=999", "--save"]
    if assignment == "read-only":
        r = read_only(bed, str(conf.parent), *args)
    elif assignment == "rename fails":
        # The new file is written; the rename over the old one, after the
        # live change, fails: the live settings are put back.
        code = (
            "import errno, os, sys\n"
            "def replace(a, b):\n"
            "    raise OSError(errno.EIO, os.strerror(errno.EIO))\n"
            "os.replace = replace\n"
            "from synguard import cli\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        r = netns.run(
            bed.server_ns, [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
        )
    else:
        args[2] = assignment
        r = bed.synguard_run(*args)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("synguard: error: " + message.format(conf=conf)), r.stderr
    assert conf.read_text() == content
    assert live_settings(bed) == before
    assert [p.name for p in conf.parent.iterdir()] == [conf.name]  # no new file left beside it


@pytest.mark.parametrize(
    "command", [["status"], ["list"], ["set", "rexmtlimit=2"], ["rotate"], ["top", "1", "1"]]
)
def test_without_root(protected, command):
    bed, _ = protected
    r = as_nobody(bed, command[0], bed.server_if, *command[1:])
    assert r.returncode == 2
    assert r.stderr == "synguard: error: %s needs root (CAP_BPF, CAP_NET_ADMIN)\n" % command[0]


def test_detach_says_what_it_did(tmp_path):
    with Testbed() as bed:
        key = tmp_path / "fleet.key"
        assert bed.synguard_run("keygen", str(key)).returncode == 0
        proc = bed.attach([PORT], "--no-metrics", "--fleet-key", str(key))
        r = bed.synguard_run("rotate", bed.server_if)
        assert r.returncode == 2
        assert r.stderr.startswith("synguard: error: %s: its keys come from the fleet" % bed.server_if)
        state = bed.synguard_run("status", bed.server_if, "--json")
        assert state.returncode == 0
        r = bed.synguard_run("detach", bed.server_if, "--now")  # the drain: test_netns_lifecycle.py
        assert r.returncode == 0 and proc.wait(30) == 0
        said = r.stdout.strip()
        prefix = "synguard: %s: stopped the controller (pid %d), which removed XDP program " % (
            bed.server_if,
            proc.pid,
        )
        assert said.startswith(prefix) and said.endswith(", the pins, the run state"), (said, state.stdout)
        assert ", tc filter " in said
        # Again, the way many run it: from ip netns exec, whose /sys is not
        # this namespace's once synguard has joined the host's mounts.
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                bed.server_ns,
                sys.executable,
                "-m",
                "synguard.cli",
                "detach",
                bed.server_if,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (r.returncode, r.stdout, r.stderr) == (
            0,
            "synguard: %s: nothing attached\n" % bed.server_if,
            "",
        )


def test_detach_in_the_wrong_namespace_says_where(protected):
    bed, proc = protected
    r = subprocess.run(
        [sys.executable, "-m", "synguard.cli", "detach", bed.server_if],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().endswith(
        "a controller (pid %d) protects %s in network namespace %d: run detach there "
        "(nsenter --net=/proc/%d/ns/net synguard detach %s)"
        % (proc.pid, bed.server_if, netns.ns_id(bed.server_ns), proc.pid, bed.server_if)
    )
    assert proc.poll() is None


def test_status_during_attach_says_it_is_under_way():
    """From the controller's first step (the lock) to its "protecting"
    line, status says attach is under way, and exits 1."""
    with Testbed() as bed:
        proc = bed.synguard(
            "attach", bed.server_if, "--ports", str(PORT), "--no-metrics", stdout=subprocess.PIPE, text=True
        )
        try:
            said = []
            while not said or said[-1][0] != 0:
                r = bed.synguard_run("status", bed.server_if)
                said.append((r.returncode, (r.stdout or r.stderr).strip().splitlines()[0]))
                assert proc.poll() is None, said
            assert "protecting" in proc.stdout.readline()
            kinds = [s for s in said if "not attached" not in s[1]]
            assert kinds[0][0] == 1 and kinds[0][1].endswith("attach is still under way"), said
        finally:
            proc.send_signal(signal.SIGQUIT)
            assert proc.wait(30) == 0
