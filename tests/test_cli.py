"""Bad input gets one line on stderr (`synguard: error: ...`), exit code 2,
and nothing attached."""

import os
import struct
import subprocess
import sys

import pytest
from synguard import layout


def synguard(*args, env=None, user=None, code=None):
    argv = [sys.executable, "-m", "synguard.cli"] + list(args)
    if code:
        argv = [sys.executable, "-c", code] + list(args)
    pre = (lambda: os.setuid(user)) if user is not None else None
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, preexec_fn=pre, timeout=60
    )


def one_error_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("synguard: error: ")
    return lines[0][len("synguard: error: ") :]


@pytest.mark.parametrize(
    "ports,message",
    [
        ("0", "port '0' is outside 1..65535"),
        ("8010-8000", "port range '8010-8000' is reversed (write 8000-8010)"),
        ("65536", "port '65536' is outside 1..65535"),
        ("80,http", "invalid port 'http'"),
        ("", "invalid port ''"),
    ],
)
def test_bad_ports(ports, message):
    r = synguard("attach", "lo", "--ports", ports)
    assert r.returncode == 2 and one_error_line(r) == message


@pytest.mark.parametrize(
    "args,message",
    [
        (["attach", "nosuchif0", "--ports", "80"], "no interface named nosuchif0 in this network namespace"),
        (["attach", "bad/name", "--ports", "80"], "invalid interface name 'bad/name'"),
        (
            ["attach", "lo", "--ports", "80", "--rotate-seconds", "0"],
            "--rotate-seconds must be within 1..3600",
        ),
        (
            ["attach", "lo", "--ports", "80", "--metrics-addr", "9717"],
            "--metrics-addr: expected HOST:PORT, got '9717'",
        ),
        (
            ["attach", "lo", "--ports", "80", "--mode", "turbo"],
            "argument --mode: invalid choice: 'turbo' (choose from 'auto', 'native', 'generic')",
        ),
        (["attach", "lo"], "the following arguments are required: --ports (or ports in --config)"),
        (["status", "bad/name"], "invalid interface name 'bad/name'"),
        (["frobnicate"], None),
    ],
)
def test_bad_arguments(args, message):
    r = synguard(*args)
    assert r.returncode == 2
    line = one_error_line(r)
    if message:
        assert line == message


def test_not_root():
    r = synguard("attach", "lo", "--ports", "80", user=65534)
    assert r.returncode == 2
    assert one_error_line(r) == "attaching needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_NET_RAW)"


@pytest.mark.root
def test_kernel_without_the_kfunc(tmp_path):
    strings = b"\0int\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, 32)
    btf = tmp_path / "vmlinux"
    btf.write_bytes(
        struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings
    )
    r = synguard("attach", "lo", "--ports", "80", env={"SYNGUARD_VMLINUX_BTF": str(btf)})
    assert r.returncode == 2
    assert one_error_line(r) == (
        "kernel %s lacks bpf_sk_assign_tcp_reqsk: synguard needs Linux >= 6.9 with BTF" % os.uname().release
    )


@pytest.mark.root
def test_bcc_missing():
    code = (
        "import sys; sys.modules['bcc'] = None; from synguard.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = synguard("attach", "lo", "--ports", "80", "--no-metrics", code=code)
    assert r.returncode == 2
    assert one_error_line(r) == "bcc is missing: install python3-bpfcc (deploy/install.sh)"
    assert not os.path.exists(os.path.join(layout.PIN_ROOT, "lo"))


def test_status_of_an_unprotected_interface():
    r = synguard("status", "lo")
    assert r.returncode == 1 and r.stderr.strip() == "synguard: lo is not protected: not attached"


@pytest.mark.root
def test_detach_with_nothing_attached():
    r = synguard("detach", "lo")
    assert r.returncode == 0 and r.stdout.strip() == "synguard: lo: nothing attached"


@pytest.mark.root
def test_detach_of_an_interface_that_is_not_there_is_an_error():
    r = synguard("detach", "sgnothere0")
    assert r.returncode == 2
    assert one_error_line(r) == "no interface sgnothere0 here, and nothing of synguard's for it"


@pytest.mark.root  # list joins the host's mount namespace first
def test_a_reader_that_goes_away_is_not_an_error():
    """`synguard ... | head -1`: the closed pipe ends the command quietly."""
    code = (
        "import sys; from synguard import cli\n"
        "def many(args):\n"
        "    for i in range(100000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "cli.COMMANDS['list'] = many\n"
        "sys.exit(cli.main(['list', 'lo']))\n"
    )
    r = subprocess.run(
        '%s -c "$CODE" | head -1' % sys.executable,
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "CODE": code},
        executable="/bin/bash",
    )
    assert r.stdout == "line 0\n" and r.stderr == ""
    r = subprocess.run(
        'set -o pipefail; %s -c "$CODE" | head -1 >/dev/null' % sys.executable,
        shell=True,
        env={**os.environ, "CODE": code},
        executable="/bin/bash",
    )
    assert r.returncode == 0


@pytest.mark.parametrize(
    "ports,shown",
    [
        ([80], "80"),
        ([80, 443], "80,443"),
        (list(range(8000, 8101)), "8000-8100"),
        ([1, 2, 4, 5, 6], "1-2,4-6"),
    ],
)
def test_ports_are_shown_as_ranges(ports, shown):
    from synguard.options import format_ports, parse_ports

    assert format_ports(ports) == shown and parse_ports(shown) == ports


def attach_options(*argv):
    from synguard import cli, options

    return options.attach_options(cli.build_parser().parse_args(["attach", "lo", *argv]))


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "deploy", "synguard.example.toml")


def test_config_file_carries_every_option():
    o = attach_options("--config", EXAMPLE)
    assert o.fleet_key == ""  # commented out in the example
    assert (o.ports, o.mode, o.rotate_seconds, o.metrics_addr, o.force) == (
        [80, 443],
        "auto",
        16.0,
        "127.0.0.1:9717",
        False,
    )
    assert o.settings == {
        "syncookies": 1,
        "syncookies_only": 0,
        "cachelimit": 15360,
        "bucketlimit": 30,
        "rexmtlimit": 3,
        "rexmt_ms": 1000,
        "pause_ms": 16000,
        "synack_rate": 1000,
        "synack_burst": 1000,
        "prefix4": 24,
        "prefix6": 64,
    }
    from synguard import configfile
    from synguard.settings import SETTINGS

    text = open(EXAMPLE).read()
    assert all(
        "\n%s = " % k in text or "\n# %s = " % k in text
        for k in list(configfile.ATTACH_KEYS) + list(SETTINGS)
    )


def test_flags_win_over_the_config_file(tmp_path):
    conf = tmp_path / "eth0.toml"
    conf.write_text('ports = "8000-8002"\nmode = "generic"\nmetrics = false\n[settings]\ncachelimit = 100\n')
    o = attach_options("--config", str(conf))
    assert (o.ports, o.mode, o.metrics_addr, o.settings) == (
        [8000, 8001, 8002],
        "generic",
        "",
        {"cachelimit": 100},
    )
    o = attach_options(
        "--config",
        str(conf),
        "--ports",
        "9",
        "--mode",
        "native",
        "--metrics-addr",
        "[::1]:9",
        "--force",
        "--cachelimit",
        "7",
    )
    assert (o.ports, o.mode, o.metrics_addr, o.force, o.settings) == (
        [9],
        "native",
        "[::1]:9",
        True,
        {"cachelimit": 7},
    )


@pytest.mark.parametrize(
    "content,message",
    [
        ("ports = [80]\nport = 81\n", "unknown key 'port'"),
        ("ports = [80]\n[settings]\ncachelimt = 5\n", "unknown key settings.cachelimt"),
        ("ports = 80\n", "ports has the wrong type (int)"),
        ('ports = [80]\nforce = "yes"\n', "force has the wrong type (str)"),
        ("ports = [80]\n[settings]\nrexmtlimit = 99\n", "rexmtlimit must be within 0..10, not 99"),
        ('ports = [80]\nmode = "turbo"\n', "mode must be auto, native or generic, not 'turbo'"),
        ("ports = [0]\n", "port '0' is outside 1..65535"),
        ("ports = [80\n", "is not valid TOML"),
    ],
)
def test_bad_config_files(tmp_path, content, message):
    conf = tmp_path / "bad.toml"
    conf.write_text(content)
    r = synguard("attach", "lo", "--config", str(conf))
    assert r.returncode == 2
    assert message in one_error_line(r)


def test_unreadable_config_file(tmp_path):
    r = synguard("attach", "lo", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2
    assert one_error_line(r) == "cannot read %s: No such file or directory" % (tmp_path / "missing.toml")
