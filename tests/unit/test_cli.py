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


def replacing(command, body, *argv):
    """Python code running `synguard COMMAND ARGV` with the command's run
    replaced by a function of args with the body given (lines)."""
    lines = ["import sys; from synguard import cli", "def run(args):", *("    " + line for line in body)]
    lines += ["cli.COMMANDS[%r].run = run" % command, "sys.exit(cli.main(%r))" % [command, *argv]]
    return "\n".join(lines) + "\n"


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
        (
            ["attach", "lo", "--ports", "80", "--cookies", "turbo"],
            "argument --cookies: invalid choice: 'turbo' (choose from 'auto', 'synguard', 'kernel')",
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
        "kernel %s lacks bpf_tcp_gen_syncookie (Linux >= 5.3): synguard needs Linux >= 5.3 (the "
        "kernel's cookies) or >= 6.9" % os.uname().release
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
    assert one_error_line(r) == "no interface named sgnothere0 in this network namespace"


@pytest.mark.root  # list joins the host's mount namespace first
def test_a_reader_that_goes_away_is_not_an_error():
    """`synguard ... | head -1`: the closed pipe ends the command quietly."""
    code = replacing("list", ["for i in range(100000):", "    print('line', i)", "return 0"], "lo")
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
    from synguard.formats import format_ports, parse_ports

    assert format_ports(ports) == shown and parse_ports(shown) == ports


def attach_options(*argv):
    from synguard import cli, options

    return options.attach_options(cli.build_parser().parse_args(["attach", "lo", *argv]))


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "synguard.example.toml")


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
    from synguard import layout

    assert o.settings == layout.SETTING_DEFAULTS  # the example says the defaults
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
        (
            "ports = true\n",
            'ports must be a port, a list of ports or a string ("80,443,8000-8010"), not true/false',
        ),
        ('ports = [80]\nforce = "yes"\n', "force must be true or false, not a string"),
        ("ports = [80]\n[settings]\nrexmtlimit = 99\n", "rexmtlimit must be within 0..10, not 99"),
        ('ports = [80]\nmode = "turbo"\n', "mode must be auto, native or generic, not 'turbo'"),
        ('ports = [80]\ncookies = "turbo"\n', "cookies must be auto, synguard or kernel, not 'turbo'"),
        ("ports = [80]\ncookies = 3\n", "cookies must be a string, not a number"),
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


def test_ports_may_be_one_number_a_list_or_a_string():
    from synguard import configfile

    for text in ("ports = 80", "ports = [80]", 'ports = "80"'):
        assert configfile.loads(text + "\n", "x.toml")["ports"] == "80"
    assert configfile.loads('ports = "80,443"\n[settings]\nratelimit = 5\n', "x.toml") == {
        "ports": "80,443",
        "settings": {"synack_rate": 5},
    }


def test_unreadable_config_file(tmp_path):
    r = synguard("attach", "lo", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2
    assert one_error_line(r) == "cannot read config file %s: No such file or directory" % (
        tmp_path / "missing.toml"
    )


# --- usage and help -----------------------------------------------------------


def subcommands():
    from synguard import cli

    p = cli.build_parser()
    (sub,) = [a for a in p._actions if isinstance(a, type(p._subparsers._group_actions[0]))]
    return sub.choices


def test_bare_synguard_lists_every_command():
    r = synguard()
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("usage:")
    names = set(subcommands())
    assert {"attach", "keygen", "rotate", "top"} <= names
    for name in names:
        assert "\n  synguard %s" % name in r.stderr  # in the usage block
        assert "\n  %s " % name in r.stderr  # and in the list with its line


@pytest.mark.parametrize(
    "name", ["attach", "status", "list", "set", "detach", "rotate", "top", "keygen", "ebpf"]
)
def test_every_command_has_help_with_examples(name):
    assert name in subcommands()
    r = synguard(name, "--help")
    assert r.returncode == 0 and r.stderr == ""
    usage, description, *rest = r.stdout.split("\n\n")
    assert usage.startswith("usage: synguard %s" % name)
    assert "\n" not in description.strip() and description.endswith(".")
    examples = r.stdout.split("\nexamples:\n", 1)[1]
    assert examples.startswith("  synguard %s" % name) or examples.startswith("  sudo synguard %s" % name)
    if name not in ("keygen", "ebpf"):
        assert "IFACE       " in r.stdout or "IFACE  " in r.stdout
        assert "the interface, by its name in this network namespace" in " ".join(r.stdout.split())


def test_help_shows_the_defaults():
    text = " ".join(synguard("attach", "--help").stdout.split())
    for default in (
        "default auto",
        "default 16",
        "(default 127.0.0.1:9717)",
        "auto (default)",
        "default 15360",  # cachelimit
        "1..4194304",
        "default 1)",  # rexmtbase
    ):
        assert default in text, default
    assert "e+0" not in text
    for name in ("status", "list"):
        text = " ".join(synguard(name, "--help").stdout.split())
        assert "--json print everything as JSON" in text
    assert "seconds between lines (default 1)" in " ".join(synguard("top", "--help").stdout.split())


# --- bad input: files ------------------------------------------------------------


def bad_file(tmp_path, kind):
    """A path of each kind the file-taking options must refuse."""
    path = tmp_path / kind
    if kind == "binary":
        path.write_bytes(b"\xaf\x07" + os.urandom(30))  # what head -c 32 /dev/urandom gives
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking open would hang
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(100 << 20)  # sparse: 100 MB to read, none on disk
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone")
    if kind != "dangling":
        os.chmod(path, 0o600)  # a fleet key's mode: the refusal is for what it is
    return path


BAD_FILES = {
    "binary": "is not a text file (byte 0xaf at offset 0 is not UTF-8)",
    "empty": "is empty",
    "directory": "is a directory",
    "fifo": "is not a regular file (a FIFO)",
    "huge": "is too large (104857600 bytes; at most",
    "dangling": "is a symlink to %s, which does not exist",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("option,what", [("--config", "config file"), ("--fleet-key", "fleet key")])
def test_bad_files_are_refused(tmp_path, option, what, kind):
    path = bad_file(tmp_path, kind)
    r = synguard("attach", "lo", "--ports", "80", "--no-metrics", option, str(path))
    assert r.returncode == 2, r.stderr
    expected = BAD_FILES[kind] % (tmp_path / "gone") if kind == "dangling" else BAD_FILES[kind]
    assert one_error_line(r).startswith("%s %s %s" % (what, path, expected))
    assert "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(layout.PIN_ROOT, "lo"))


@pytest.mark.root
@pytest.mark.parametrize("option,what", [("--config", "config file"), ("--fleet-key", "fleet key")])
def test_unreadable_files_are_named(tmp_path, option, what):
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "secret"
    path.write_text('ports = [80]\nkey = "00"\n')
    os.chmod(path, 0o600)
    r = synguard("attach", "lo", "--ports", "80", option, str(path), user=65534)
    assert r.returncode == 2
    assert one_error_line(r) == "cannot read %s %s: Permission denied" % (what, path)


def test_a_binary_fleet_key_in_a_config_file(tmp_path):
    key = bad_file(tmp_path, "binary")
    conf = tmp_path / "c.toml"
    conf.write_text('ports = [80]\nfleet_key = "%s"\n' % key)
    r = synguard("attach", "lo", "--no-metrics", "--config", str(conf))
    assert r.returncode == 2 and one_error_line(r).startswith("fleet key %s is not a text file" % key)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("directory", "already exists (a directory): keygen never overwrites"),
        ("fifo", "already exists (a FIFO): keygen never overwrites"),
        ("dangling", "already exists (a symlink, dangling): keygen never overwrites"),
        ("empty", "already exists: keygen never overwrites"),
    ],
)
def test_keygen_never_overwrites(tmp_path, kind, message):
    path = bad_file(tmp_path, kind)
    r = synguard("keygen", str(path))
    assert r.returncode == 2 and one_error_line(r) == "%s %s" % (path, message)


def test_keygen_into_a_missing_directory(tmp_path):
    r = synguard("keygen", str(tmp_path / "no" / "key"))
    assert r.returncode == 2
    assert one_error_line(r) == "cannot create %s: No such file or directory" % (tmp_path / "no" / "key")


@pytest.mark.root
def test_keygen_output_is_a_fleet_key(tmp_path):
    from synguard import fleet

    path = tmp_path / "fleet.key"
    assert synguard("keygen", str(path)).returncode == 0
    assert len(fleet.load(str(path)).key) == fleet.KEY_BYTES


# --- bad input: values -------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cachelimit", "0"], "cachelimit must be within 1..4194304, not 0"),
        (["--ratelimit", "20000000"], "ratelimit must be within 0..10000000, not 20000000"),
        (["--rexmtbase", "0"], "rexmtbase must be within 0.01..60, not 0"),
        (
            ["--syncookies", "0", "--syncookies-only", "1"],
            "syncookies_only=1 needs syncookies=1 (with syncookies=0 there would be neither cookies "
            "nor syncache entries)",
        ),
        (["--metrics-addr", ":http"], "--metrics-addr: expected HOST:PORT, got '[::]:http'"),
        (["--metrics-addr", ":99999"], "--metrics-addr: port 99999 is outside 1..65535"),
    ],
)
def test_bad_values(args, message):
    r = synguard("attach", "lo", "--ports", "80", *args)
    assert r.returncode == 2 and one_error_line(r) == message


def test_no_scientific_notation_anywhere():
    from synguard.formats import num
    from synguard.settings import SETTINGS

    assert num(4194304.0) == "4194304" and num(0.01) == "0.01" and num(1e7) == "10000000"
    for s in SETTINGS.values():
        try:
            s.parse(str(s.hi * 10 + 1))
        except ValueError as e:
            assert "e+" not in str(e), e


def test_errors_from_a_config_file_name_it(tmp_path):
    conf = tmp_path / "eth0.toml"
    for content, message in (
        ("ports = [80]\n[settings]\nsyncookies = 0\nsyncookies_only = 1\n", "syncookies_only=1 needs"),
        ('ports = [80]\nmode = "turbo"\n', "%s: mode must be auto" % conf),
        ('ports = [80]\nconntrack = "x"\n', "%s: conntrack must be" % conf),
        ('ports = "9-1"\n', "%s: port range '9-1' is reversed" % conf),
        ("ports = [80]\nrotate_seconds = 0\n", "%s: rotate_seconds must be within 1..3600" % conf),
        ('ports = [80]\nmetrics_addr = "x"\n', "%s: metrics_addr: expected HOST:PORT" % conf),
        (
            "ports = [80]\n[settings]\ncachelimit = 0\n",
            "%s: settings.cachelimit must be within 1..4194304" % conf,
        ),
    ):
        conf.write_text(content)
        r = synguard("attach", "lo", "--config", str(conf))
        assert r.returncode == 2 and one_error_line(r).startswith(message), (content, r.stderr)


@pytest.mark.parametrize(
    "given,bound", [(":9717", "[::]:9717"), ("0.0.0.0:1", "0.0.0.0:1"), ("[::1]:9", "[::1]:9")]
)
def test_metrics_addr_without_a_host_is_every_address(given, bound):
    assert attach_options("--ports", "80", "--metrics-addr", given).metrics_addr == bound


@pytest.mark.parametrize(
    "args,message",
    [
        (["top", "lo", "0"], "INTERVAL must be seconds within 0.1..3600, not '0'"),
        (["top", "lo", "x"], "INTERVAL must be seconds within 0.1..3600, not 'x'"),
        (["top", "lo", "1", "0"], "COUNT must be a whole number of lines, at least 1, not '0'"),
        (["top", "lo", "1", "2.5"], "COUNT must be a whole number of lines, at least 1, not '2.5'"),
        (["top", "bad/name"], "invalid interface name 'bad/name'"),
        (["rotate", "bad/name"], "invalid interface name 'bad/name'"),
    ],
)
def test_bad_top_and_rotate_arguments(args, message):
    r = synguard(*args)
    assert r.returncode == 2 and one_error_line(r) == message


# The CLI's contract, one row a command and condition: (argv, exit code, the
# line on stderr). 0 ok; 1 not protected or a runtime failure; 2 bad input
# or refused (synguard --help prints the table).
CONTRACT = (
    [
        (("status", "lo"), 1, "synguard: lo is not protected: not attached"),
        (("list", "lo"), 1, "synguard: error: lo is not protected"),
        (("set", "lo", "ratelimit=10"), 1, "synguard: error: lo is not protected"),
        (("top", "lo", "1", "1"), 1, "synguard: error: lo is not protected"),
        (("rotate", "lo"), 1, "synguard: error: lo is not protected"),
        (("detach", "lo"), 0, None),
    ]
    + [
        (
            (command, "nosuch0") + extra,
            2,
            "synguard: error: no interface named nosuch0 in this network namespace",
        )
        for command, extra in (
            ("status", ()),
            ("list", ()),
            ("set", ("ratelimit=10",)),
            ("top", ("1", "1")),
            ("rotate", ()),
            ("detach", ()),
        )
    ]
    + [
        (("set", "lo", "ratelimit=x"), 2, "synguard: error: ratelimit: 'x' is not a whole number"),
        (("status",), 2, "synguard: error: the following arguments are required: IFACE"),
        (("nosuch",), 2, None),
    ]
)


@pytest.mark.root  # they join the host's mount namespace first
@pytest.mark.parametrize("argv,code,line", CONTRACT, ids=[" ".join(c[0]) for c in CONTRACT])
def test_the_cli_contract(argv, code, line):
    r = synguard(*argv)
    assert r.returncode == code, r.stderr
    if line:
        assert r.stderr.strip() == line
    if code == 2:
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_the_exit_codes_are_in_the_help():
    from synguard.cli.common import EXIT_CODES

    text = synguard("--help").stdout
    assert all("  %d  %s" % row in text for row in EXIT_CODES)


def test_rotate_needs_root():
    r = synguard("rotate", "lo", user=65534)
    assert r.returncode == 2 and one_error_line(r) == "rotate needs root (CAP_BPF, CAP_NET_ADMIN)"


@pytest.mark.root  # status joins the host's mount namespace first
def test_a_permission_error_says_root_is_needed():
    denied = "raise PermissionError(13, 'Permission denied', '/sys/fs/bpf/synguard/1/eth0/secrets')"
    code = replacing("status", [denied], "lo")
    r = synguard(code=code)
    assert r.returncode == 2 and one_error_line(r) == "status needs root (CAP_BPF, CAP_NET_ADMIN)"


def test_never_a_traceback():
    code = replacing("ebpf", ["return {}['missing']"])
    r = synguard(code=code)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert one_error_line(r) == "internal error (KeyError: 'missing'); SYNGUARD_DEBUG=1 shows where"
    r = synguard(code=code, env={"SYNGUARD_DEBUG": "1"})
    assert "Traceback" in r.stderr


# --- list ---------------------------------------------------------------------------


def entry(family, local, remote, **kw):
    return {
        "family": family,
        "local": local,
        "remote": remote,
        "age_seconds": 12.345,
        "retransmits": 3,
        "mss": 1460,
        "wscale": 7,
        "sack": True,
        "timestamps": True,
        "ecn": True,
        "unreach": False,
        **kw,
    }


def test_list_rows_fit_100_columns():
    from synguard.cli.look import list_lines

    rows = [
        entry("inet", "255.255.255.255:65535", "255.255.255.255:65535", unreach=True),
        entry("inet6", "[2001:db8::2]:8080", "[2001:db8:5:ffff:ffff:ffff:ffff:ffff]:65535", unreach=True),
        entry("inet6", "[2001:db8::2]:443", "[2001:db8::1]:50000", wscale=None),
    ]
    lines = list(list_lines(rows))
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]
    assert lines[0].split() == [
        "Net",
        "Local",
        "Address:Port",
        "Peer",
        "Address:Port",
        "Age",
        "Rx",
        "Options",
    ]
    assert lines[1].split() == [
        "tcp4",
        "255.255.255.255:65535",
        "255.255.255.255:65535",
        "12.3s",
        "3",
        "mss:1460",
        "ws:7",
        "sack",
        "ts",
        "ecn",
        "unreach",
    ]
    # the long IPv6 row: its options on a line of their own
    assert lines[2].split()[2] == "[2001:db8:5:ffff:ffff:ffff:ffff:ffff]:65535"
    assert lines[3] == "    mss:1460 ws:7 sack ts ecn unreach"
    assert lines[4].split()[-4:] == ["mss:1460", "sack", "ts", "ecn"]


# --- set --save: the config file edited in place ------------------------------------


def saved(path, values):
    from synguard import configedit

    pending = configedit.prepare(str(path), values)
    try:
        pending.commit()
    finally:
        pending.discard()
    return path.read_bytes().decode()


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".synguard-save")]


def test_save_changes_only_the_settings_lines(tmp_path):
    from synguard import configfile

    conf = tmp_path / "eth0.toml"
    before = open(EXAMPLE).read()
    conf.write_text(before)
    conf.chmod(0o640)
    after = saved(conf, {"rexmtlimit": "2", "cachelimit": "100000", "rexmtbase": "0.5"})
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    # The value replaced, the comment kept in its column.
    assert changed == [
        (
            "cachelimit = 15360                # half-open entries in all (512 buckets x 30)",
            "cachelimit = 100000               # half-open entries in all (512 buckets x 30)",
        ),
        (
            "rexmtlimit = 3                    # SYN-ACK retransmissions before an entry expires",
            "rexmtlimit = 2                    # SYN-ACK retransmissions before an entry expires",
        ),
        (
            "rexmtbase = 1.0                   # seconds to the first retransmission, then x2, x4, x8",
            "rexmtbase = 0.5                   # seconds to the first retransmission, then x2, x4, x8",
        ),
    ]
    assert configfile.load(str(conf))["settings"]["cachelimit"] == 100000
    assert conf.stat().st_mode & 0o777 == 0o640 and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "before,values,after",
    [
        # A key the table lacks goes after its last key, before what follows.
        (
            "ports = [80]\n[settings]\ncachelimit = 5  # five\n\n# the end\n",
            {"cachelimit": "15360", "rexmtlimit": "2"},
            "ports = [80]\n[settings]\ncachelimit = 15360 # five\nrexmtlimit = 2\n\n# the end\n",
        ),
        # No [settings] at all: one is added at the end.
        ('ports = "80"  # web', {"prefix6": "48"}, 'ports = "80"  # web\n\n[settings]\nprefix6 = 48\n'),
        # CRLF lines stay CRLF; quoted keys are keys.
        (
            'ports = [80]\r\n[settings]\r\n"rexmtlimit" = 3\r\n',
            {"rexmtlimit": "1", "bucketlimit": "7"},
            'ports = [80]\r\n[settings]\r\n"rexmtlimit" = 1\r\nbucketlimit = 7\r\n',
        ),
    ],
)
def test_save_adds_what_is_missing(tmp_path, before, values, after):
    conf = tmp_path / "eth0.toml"
    conf.write_bytes(before.encode())
    assert saved(conf, values) == after and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "content,values,message",
    [
        ("ports = [80\n", {"rexmtlimit": "2"}, "{conf} is not valid TOML"),
        ("ports = [80]\nprot = 1\n", {"rexmtlimit": "2"}, "{conf}: unknown key 'prot'"),
        (
            "ports = [80]\nsettings.rexmtlimit = 3\n",
            {"rexmtlimit": "2"},
            "cannot change [settings] in {conf} in place (dotted keys or an inline table?): edit it by hand",
        ),
        (
            "ports = [80]\nsettings = { rexmtlimit = 3 }\n",
            {"rexmtlimit": "2"},
            "cannot change [settings] in {conf} in place (dotted keys or an inline table?): edit it by hand",
        ),
        (
            "ports = [80]\n[settings]\nsyncookies = 0\n",
            {"syncookies_only": "1"},
            "{conf} would then say: syncookies_only=1 needs syncookies=1",
        ),
        ("", {"rexmtlimit": "2"}, "config file {conf} is empty"),
    ],
)
def test_save_refuses_and_changes_nothing(tmp_path, content, values, message):
    from synguard import configedit

    conf = tmp_path / "eth0.toml"
    conf.write_text(content)
    with pytest.raises(ValueError) as e:
        configedit.prepare(str(conf), values)
    assert str(e.value).startswith(message.format(conf=conf))
    assert conf.read_text() == content and leftovers(tmp_path) == []


def test_save_through_a_symlink_keeps_it(tmp_path):
    real = tmp_path / "real.toml"
    real.write_text("ports = [80]\n")
    link = tmp_path / "eth0.toml"
    link.symlink_to(real)
    saved(link, {"rexmtlimit": "2"})
    assert link.is_symlink() and real.read_text() == "ports = [80]\n\n[settings]\nrexmtlimit = 2\n"


def test_save_into_a_file_changed_meanwhile_changes_nothing(tmp_path):
    from synguard import configedit

    conf = tmp_path / "eth0.toml"
    conf.write_text("ports = [80]\n")
    pending = configedit.prepare(str(conf), {"rexmtlimit": "2"})
    conf.write_text("ports = [81]\n")  # someone's editor, between the two steps
    with pytest.raises(ValueError, match="changed while synguard was saving into it"):
        pending.commit()
    pending.discard()
    assert conf.read_text() == "ports = [81]\n" and leftovers(tmp_path) == []


def test_save_literals_are_the_values_in_effect():
    from synguard import configedit
    from synguard.settings import SETTINGS

    assert configedit.literal("rexmtbase", SETTINGS["rexmtbase"].parse("0.0126")) == "0.013"
    assert configedit.literal("cachelimit", SETTINGS["cachelimit"].parse("4194304")) == "4194304"
    assert configedit.literal("pausetime", SETTINGS["pausetime"].parse("1e3")) == "1000"


def test_save_without_a_protected_interface_is_one_line():
    r = synguard("set", "bad/name", "rexmtlimit=2", "--save")
    assert r.returncode == 2 and one_error_line(r) == "invalid interface name 'bad/name'"


def test_the_man_page_has_every_option():
    gen = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "gen_docs.py")
    r = subprocess.run([sys.executable, gen, "man"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name, parser in subcommands().items():
        for action in parser._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert "\\fB%s\\fR" % opt.replace("-", "\\-") in r.stdout, (name, opt)
    assert "(attach \\-\\-config), keeping its other lines and comments" in r.stdout
