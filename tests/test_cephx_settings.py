"""Auth options: Config names and defaults (Ceph's), and what a client makes of them."""
from __future__ import annotations

import subprocess

import pytest

from msgr.auth import CryptoKey, Keyring, KeyringError
from msgr.auth.settings import client_auth, keyring_candidates, parse_methods
from msgr.config import Config
from msgr.encoding import AuthEntityName


def test_defaults_are_cephs():
    cfg = Config()
    assert cfg.auth_client_required == "cephx, none"
    assert cfg.auth_service_required == "cephx" and cfg.auth_cluster_required == "cephx"
    assert cfg.cephx_sign_messages is True
    assert not (cfg.cephx_require_signatures or cfg.cephx_service_require_signatures
                or cfg.cephx_cluster_require_signatures)
    assert cfg.name == "client.admin" and cfg.keyring.startswith("/etc/ceph/$cluster.$name.keyring")
    assert Config(cephx_sign_messages="false").cephx_sign_messages is False


def test_defaults_match_ceph_conf(tmp_path):
    from conftest import require_binary
    require_binary("ceph-conf")
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    ours = Config.from_ceph_conf(conf)
    for option in ("auth_client_required", "auth_service_required", "auth_cluster_required",
                   "cephx_sign_messages", "cephx_require_signatures",
                   "cephx_service_require_signatures", "cephx_cluster_require_signatures"):
        real = subprocess.run(["ceph-conf", "-c", str(conf), "--name", "client.admin",
                               "--show-config-value", option], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        assert ours.get_str(option) == real, option


def test_methods_and_keyring_paths():
    assert parse_methods("cephx, none") == [2, 1] and parse_methods("none;cephx") == [1, 2]
    with pytest.raises(KeyringError, match="gss"):
        parse_methods("gss")
    paths = keyring_candidates("/etc/ceph/$cluster.$name.keyring, /k/$type-$id", AuthEntityName(4, "3"),
                               cluster="backup")
    assert [str(p) for p in paths] == ["/etc/ceph/backup.osd.3.keyring", "/k/osd-3"]


def test_client_auth_from_a_ceph_conf(tmp_path):
    key = CryptoKey.generate()
    kr = Keyring()
    kr.add("client.foo", key)
    (tmp_path / "ceph.client.foo.keyring").write_text(kr.to_text())
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nkeyring = {tmp_path}/$cluster.$name.keyring\n"
                    "auth client required = cephx\n")
    a = client_auth(Config.from_ceph_conf(conf, name="client.foo"))
    assert a.cephx and a.key == key and a.methods == [2] and str(a.name) == "client.foo"
    # cephx only, and no keyring: refused before anything is sent
    with pytest.raises(KeyringError, match="no keyring"):
        client_auth(Config(name="client.foo", keyring=str(tmp_path / "nope"),
                           auth_client_required="cephx"))
    # cephx or none, and no keyring: none is offered alone
    a = client_auth(Config(keyring=str(tmp_path / "nope")))
    assert a.methods == [1] and not a.cephx
    # a keyring without our entity is an error naming it
    with pytest.raises(KeyringError, match="client.bar"):
        client_auth(Config(name="client.bar", keyring=str(tmp_path / "ceph.client.foo.keyring")))
