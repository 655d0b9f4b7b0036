"""Config: Ceph's option names, Ceph's value syntax, and reading a ceph.conf.

The expected values of the string forms were taken from Ceph 16 itself
(``ceph-conf -c FILE --show-config-value OPTION``); ``test_values_match_real_ceph_conf``
checks a sample against the real tool when it is installed.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import require_binary

from msgr import Config
from msgr.ceph_conf import normalize_key, parse_conf_text
from msgr.config import OPTIONS, Option, register_option
from msgr.config_values import (
    parse_bool,
    parse_debug_level,
    parse_int,
    parse_secs,
    parse_size,
)
from msgr.errors import ConfigError

# --- values as strings -------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("true", True), ("false", False), ("TRUE", True), ("False", False), ("1", True), ("0", False),
    ("2", True), ("-1", True), ("yes", True), ("no", False), ("on", True), ("off", False),
    (" true ", True),
])
def test_bool_strings(text: str, want: bool) -> None:
    assert parse_bool(text) is want


@pytest.mark.parametrize("text", ["maybe", "", "0x1", "1.0", "t"])
def test_bad_bool_strings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(text)


def test_the_issue_example_false_string_is_false() -> None:
    assert Config(ms_tcp_nodelay="false").ms_tcp_nodelay is False
    assert Config(ms_tcp_nodelay="0").ms_tcp_nodelay is False
    assert Config(ms_crc_data="off").ms_crc_data is False


@pytest.mark.parametrize("text,want", [
    ("100", 100), ("100M", 100 << 20), ("100MB", 100 << 20), ("100Mi", 100 << 20), ("4K", 4096),
    ("4KB", 4096), ("1G", 1 << 30), ("1T", 1 << 40), ("1P", 1 << 50), ("1E", 1 << 60),
    ("100B", 100), ("0B", 0), ("1Ki", 1024), ("2Gi", 2 << 30), (" 4K ", 4096), ("+5K", 5120),
])
def test_size_strings_as_ceph(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["4k", "4KiB", "100b", "1.5M", "-1", "0x10", "100 M", "10m",
                                  "5kb", "1Bi", "1iB", "1i", "", "M"])
def test_size_strings_ceph_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text,want", [("3", 3), ("1K", 1000), ("1M", 1_000_000), (" 7", 7)])
def test_int_strings_use_si_units(text: str, want: int) -> None:
    assert parse_int(text) == want


@pytest.mark.parametrize("text", ["2k", "1Ki", "1KB", "1B", "0x10", "1.0", "x"])
def test_int_strings_ceph_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text)


@pytest.mark.parametrize("text,want", [
    ("0.2", 0.2), ("2", 2.0), ("1e-3", 0.001), ("30s", 30), ("5m", 300), ("1h", 3600),
    ("2 days", 172800), ("1d", 86400), ("1w", 604800), ("1h30m", 5400), ("1 hour", 3600),
    ("10min", 600), ("3sec", 3), ("2hr", 7200), ("1m 30s", 90), ("30 s", 30), ("1mo", 2592000),
    ("1y", 31536000), ("1h30", 3630), ("2 weeks", 1209600),
])
def test_durations(text: str, want: float) -> None:
    assert parse_secs(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["abc", "1mins", "1secs", "3S", "1H", "1mon", "", "5 5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_secs(text)


def test_debug_levels() -> None:
    assert parse_debug_level("1") == (1, 1)
    assert parse_debug_level("1/5") == (1, 5)
    for bad in ("x", "1/2/3", "-1", "1/", ""):
        with pytest.raises(ValueError):
            parse_debug_level(bad)


def test_typed_values_and_strings_land_on_the_same_types() -> None:
    cfg = Config(ms_dispatch_throttle_bytes="4K", ms_initial_backoff="500", ms_max_backoff=30,
                 ms_connection_idle_timeout="5m", ms_inject_socket_failures="1K",
                 ms_inject_delay_type="osd client", ms_inject_seed="7")
    assert cfg.ms_dispatch_throttle_bytes == 4096
    assert cfg.ms_initial_backoff == 500.0 and isinstance(cfg.ms_max_backoff, float)
    assert cfg.ms_connection_idle_timeout == 300.0
    assert cfg.ms_inject_socket_failures == 1000
    assert cfg.ms_inject_delay_type == "osd client"
    assert cfg.ms_inject_seed == 7 and Config().ms_inject_seed is None


@pytest.mark.parametrize("name,value", [
    ("ms_tcp_nodelay", "maybe"), ("ms_tcp_nodelay", 1.5), ("ms_async_op_threads", 2.5),
    ("ms_async_op_threads", 0), ("ms_async_op_threads", True), ("ms_initial_backoff", -1),
    ("ms_initial_backoff", "soon"), ("ms_dispatch_throttle_bytes", "-1"),
    ("ms_dispatch_throttle_bytes", "4k"), ("ms_inject_delay_probability", 2),
    ("ms_initial_backoff", "nan"), ("ms_inject_delay_type", 3),
])
def test_bad_values_are_errors_naming_the_option(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        Config(**{name: value})


def test_unknown_option_is_an_error_everywhere() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        Config(ms_tcp_nodelayy=True)
    with pytest.raises(ConfigError, match="unknown option"):
        Config(fsid="x")   # a Ceph option pymsgr does not use: an error when passed in code
    cfg = Config()
    with pytest.raises(ConfigError):
        cfg.set("ms_crc_dat", False)
    with pytest.raises(ConfigError):
        cfg.ms_crc_dat = False   # attribute assignment is checked too


def test_attribute_assignment_parses_and_names_may_be_spelt_as_ceph_allows() -> None:
    cfg = Config()
    cfg.ms_tcp_nodelay = "false"  # type: ignore[assignment]
    assert cfg.ms_tcp_nodelay is False
    cfg.set("ms dispatch throttle bytes", "1M")
    cfg.set("ms-crc-data", "no")
    assert cfg.ms_dispatch_throttle_bytes == 1 << 20 and cfg.ms_crc_data is False
    assert Config(**{"ms tcp rcvbuf": "64K"}).ms_tcp_rcvbuf == 65536


def test_copy_equality_show_and_get() -> None:
    cfg = Config(ms_crc_data=False, ms_initial_backoff=0.5)
    twin = cfg.copy()
    assert twin == cfg and twin is not cfg
    twin.ms_crc_data = True  # type: ignore[assignment]
    assert twin != cfg and cfg.ms_crc_data is False
    shown = cfg.show()
    assert shown["ms_crc_data"] == "false" and shown["ms_initial_backoff"] == "0.500000"
    assert shown["ms_dispatch_throttle_bytes"] == str(100 << 20)
    assert cfg.get_str("ms_tcp_nodelay") == "true" and cfg.get("ms_crc_data") is False
    assert cfg.is_set("ms_crc_data") and not cfg.is_set("ms_crc_header")
    assert "ms_crc_data=False" in repr(cfg)


def test_register_option_extends_every_config() -> None:
    opt = Option("pymsgr_test_only_option", "size", 4096, "test", ceph=False)
    register_option(opt)
    try:
        assert Config().pymsgr_test_only_option == 4096   # type: ignore[attr-defined]
        assert Config(pymsgr_test_only_option="8K").get("pymsgr_test_only_option") == 8192
        assert Config().show()["pymsgr_test_only_option"] == "4096"
        with pytest.raises(ValueError, match="already registered"):
            register_option(Option("pymsgr_test_only_option", "int", 1))
        with pytest.raises(ValueError):
            register_option(Option("pymsgr_bad_default", "size", "lots"))
    finally:
        del OPTIONS["pymsgr_test_only_option"]


# --- ceph.conf ---------------------------------------------------------------------------

CONF = """\
# a ceph.conf as people write them
[global]
\tfsid = 8a3f6c4e-0000-4000-8000-000000000001
\tmon host = v1:127.0.0.1:6789   ; the monitor
\tauth cluster required = none
\tms crc data = false
\tms_dispatch_throttle_bytes = 64M
\tms   tcp   nodelay = false   # runs of blanks are one underscore
\trun dir = /tmp/$cluster
\tadmin socket = $run_dir/$cluster-$name.asok
\tlog file = "/var/log/ceph/$cluster-$name.log"
\tms inject delay type = 'osd client' # quoted

[client]
\tms crc data = true
\tms initial backoff = 1.5
\tkeyring = /etc/ceph/$cluster.$name.keyring

[client.admin]
\tms initial backoff = 30s
\tms inject socket failures = 1K

[osd]
\tms crc data = off
\tms max backoff = 2m
"""


def _write(tmp_path: Path, text: str = CONF) -> Path:
    p = tmp_path / "ceph.conf"
    p.write_text(text)
    return p


def test_from_ceph_conf_precedence_global_type_name(tmp_path: Path) -> None:
    path = _write(tmp_path)
    admin = Config.from_ceph_conf(path)                      # client.admin by default
    assert admin.ms_crc_data is True                          # [client] over [global]
    assert admin.ms_initial_backoff == 30.0                   # [client.admin] over [client]
    assert admin.ms_inject_socket_failures == 1000
    assert admin.ms_dispatch_throttle_bytes == 64 << 20       # [global]
    assert admin.ms_tcp_nodelay is False
    assert admin.ms_inject_delay_type == "osd client"
    assert admin.get("admin_socket") == "/tmp/ceph/ceph-client.admin.asok"

    other = Config.from_ceph_conf(path, name="client.foo")
    assert other.ms_initial_backoff == 1.5 and other.ms_inject_socket_failures == 0
    osd = Config.from_ceph_conf(path, name="osd.3", cluster="backup")
    assert osd.ms_crc_data is False and osd.ms_max_backoff == 120.0
    assert osd.get("admin_socket") == "/tmp/backup/backup-osd.3.asok"
    assert osd.ms_initial_backoff == 0.2                      # no [client] for an osd


def test_from_ceph_conf_keeps_ceph_only_options_aside(tmp_path: Path) -> None:
    cfg = Config.from_ceph_conf(_write(tmp_path))
    assert cfg.get("fsid") == "8a3f6c4e-0000-4000-8000-000000000001"
    assert cfg.get("mon host") == "v1:127.0.0.1:6789"         # comment stripped
    assert cfg.get("auth_cluster_required") == "none"
    assert cfg.keyring == "/etc/ceph/ceph.client.admin.keyring"   # an option since cephx
    assert cfg.name == "client.admin"
    assert cfg.ceph_options["log_file"] == "/var/log/ceph/ceph-client.admin.log"
    assert cfg.get("no_such_thing", "dflt") == "dflt"
    assert cfg.show()["fsid"].startswith("8a3f6c4e")
    with pytest.raises(ConfigError):
        Config(**cfg.ceph_options)   # still unknown to Config(...) itself


def test_from_ceph_conf_overrides_and_bad_values(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert Config.from_ceph_conf(path, ms_crc_data=False).ms_crc_data is False
    bad = _write(tmp_path, "[global]\nms crc data = perhaps\n")
    with pytest.raises(ConfigError, match=r"ceph.conf.*ms_crc_data"):
        Config.from_ceph_conf(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Config.from_ceph_conf(tmp_path / "missing.conf")


@pytest.mark.parametrize("text,match", [
    ("ms crc data = true\n[global]\n", "outside any"),
    ("[global]\nms crc data\n", "key = value"),
    ("[global\nms crc data = true\n", "heading"),
    ("[global]\nfsid = \"abc\n", "unterminated"),
])
def test_malformed_conf_lines(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_conf_text(text, "x.conf")


def test_conf_syntax_details() -> None:
    secs = parse_conf_text("[global]\n; comment\n  # comment\na = 1\na = 2\nb = x \\\n y\n"
                           "c = a\\#b # real comment\nd = \"q ; uoted\" ; c\n[global]\ne = 5\n")
    assert secs["global"] == {"a": "2", "b": "x  y", "c": "a#b", "d": "q ; uoted", "e": "5"}
    assert normalize_key("  ms  tcp nodelay ") == "ms_tcp_nodelay"
    assert normalize_key("ms-tcp-nodelay") == "ms_tcp_nodelay"


@pytest.mark.ceph
def test_values_match_real_ceph_conf(tmp_path: Path) -> None:
    """The parsers agree with Ceph 16's own on the values pymsgr shares with it."""
    require_binary("ceph-conf")
    cases = [("ms_dispatch_throttle_bytes", v) for v in ("4K", "100Mi", "3GB", "1Ki", "7", "100B")]
    cases += [("ms_crc_data", v) for v in ("false", "TRUE", "0", "2")]
    cases += [("ms_inject_socket_failures", v) for v in ("1K", "1M", "12")]
    cases += [("ms_initial_backoff", v) for v in ("1.5", "1e-3", "2")]
    for option, value in cases:
        conf = _write(tmp_path, f"[global]\n{option.replace('_', ' ')} = {value}\n")
        real = subprocess.run(["ceph-conf", "-c", str(conf), "--name", "client.admin",
                               "--show-config-value", option], capture_output=True, text=True,
                              timeout=30, check=False).stdout.strip()
        ours = Config.from_ceph_conf(conf).get_str(option)
        assert ours == real, (option, value)


def test_every_option_default_round_trips_through_its_string() -> None:
    cfg = Config()
    for name, opt in OPTIONS.items():
        if not opt.nullable:
            again = Config(**{name: cfg.get_str(name)})
            assert again.get(name) == getattr(cfg, name), name
