"""A mapping reads its database password from a 0600 file (``password_file``), never from the
URL it keeps in the file or the environment; a file others can read is refused, naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.mapping import load_mapping

MAPPING = """url{how}
password_file = "secrets/db-password"
[domains.births]
table = "births"
columns = {{ subject = "patient", lbw = "lbw" }}
"""


def _mapping(tmp: Path, url: str, env: bool = False) -> Path:
    how = '_env = "HOSPITAL_DB_URL"' if env else f' = "{url}"'
    path = tmp / "mapping.toml"
    path.write_text(MAPPING.format(how=how))
    (tmp / "secrets").mkdir(exist_ok=True)
    secret = tmp / "secrets" / "db-password"
    secret.write_text("pa:ss/wo@rd\n")
    os.chmod(secret, 0o600)
    return path


def test_password_comes_from_the_file_next_to_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    mapping = load_mapping(_mapping(tmp_path, "postgresql+psycopg://reader@db.example/hospital"))
    url = make_url(mapping.database_url())
    assert (url.username, url.password, url.host) == ("reader", "pa:ss/wo@rd", "db.example")
    monkeypatch.setenv("HOSPITAL_DB_URL", "postgresql+psycopg://reader@db.example/hospital")
    mapping = load_mapping(_mapping(tmp_path, "", env=True))
    assert make_url(mapping.database_url()).password == "pa:ss/wo@rd"


def test_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "postgresql+psycopg://reader@db.example/hospital"))
    os.chmod(tmp_path / "secrets" / "db-password", 0o644)
    with pytest.raises(ValueError, match=r"^password_file: .*db-password is readable by others; chmod 600 it") as err:
        mapping.database_url()
    assert "pa:ss" not in str(err.value)


def test_a_url_holding_a_password_as_well_is_refused(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, "postgresql+psycopg://reader:other@db.example/hospital"))
    with pytest.raises(ValueError, match="password_file: the URL holds a password too") as err:
        mapping.database_url()
    assert "other" not in str(err.value)
