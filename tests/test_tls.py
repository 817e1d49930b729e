"""Development certificates and the checks on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedmnist.common.errors import UserError
from fedmnist.common.tls import generate_certificates, load_root_certificate, load_server_certificates


def test_generated_certificates_belong_together(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path, "fl-server.example")
    assert [p.name for p in paths] == ["ca.pem", "server.pem", "server.key"]
    ca, _, key = load_server_certificates(tmp_path)
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in key
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0  # Only the owner reads the key.


def test_mismatched_files_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    generate_certificates(first, "localhost")
    generate_certificates(second, "localhost")
    shutil.copy(second / "server.key", first / "server.key")
    with pytest.raises(UserError, match="server.key is not the key of"):
        load_server_certificates(first)
    generate_certificates(first, "localhost")
    shutil.copy(second / "ca.pem", first / "ca.pem")
    with pytest.raises(UserError, match="server.pem was not signed by"):
        load_server_certificates(first)


def test_missing_or_garbled_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read TLS file"):
        load_server_certificates(tmp_path)
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(UserError, match="is not a PEM certificate"):
        load_root_certificate(tmp_path / "ca.pem")


def test_expired_or_not_yet_valid_certificates_are_refused(tmp_path: Path) -> None:
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    generate_certificates(tmp_path / "old", "localhost", starts=now - datetime.timedelta(days=400), valid_days=365)
    with pytest.raises(UserError, match=r"expired on .*make new certificates"):
        load_server_certificates(tmp_path / "old")
    generate_certificates(tmp_path / "future", "localhost", starts=now + datetime.timedelta(days=3))
    with pytest.raises(UserError, match=r"is not valid before .*clock"):
        load_server_certificates(tmp_path / "future")
