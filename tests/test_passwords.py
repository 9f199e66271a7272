"""Passwords: hidden in every storage URL form SQLAlchemy accepts, and in the messages that quote them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u:secretpw@127.0.0.1/db", "secretpw"),
        ("postgresql://u:se@cret@127.0.0.1:5432/db", "cret"),  # an unencoded '@' in the password
        ("postgresql+psycopg://u:a:b@host/db", "a:b"),
        ("postgresql://u@host/db?password=secretpw&sslmode=require", "secretpw"),
        ("postgresql://host/db?user=u&password='s p'", "s p"),
        ("could not connect: host=h user=u password=secretpw dbname=x", "secretpw"),
    ],
)
def test_passwords_mask_url_hides_every_password_form(url: str, secret: str) -> None:
    from hpsearch.store.passwords import mask_url

    masked = mask_url(url)
    assert secret not in masked and "***" in masked
    assert mask_url("sqlite:///studies/x.db") == "sqlite:///studies/x.db"


def test_passwords_bad_url_error_never_shows_the_password(run_cli) -> None:
    code, _, err = run_cli("leaderboard", "x", "--storage", "postgresql://u:pw@pw@127.0.0.1:1/db?password=other")
    assert code == 2 and "pw@pw" not in err and "other" not in err and "@pw" not in err.replace("***@", "")


def test_passwords_driver_message_never_shows_a_part_of_the_password(run_cli) -> None:
    """SQLAlchemy splits `u:s3cr@tpart@host` at the first '@': the driver is told the host is
    `tpart@127.0.0.1` and says so when it cannot resolve it. No part of the password may show."""
    code, _, err = run_cli("leaderboard", "x", "--storage", "postgresql://u:s3cr@tpart@127.0.0.1:1/db")
    assert code == 2 and err.startswith("Error: ") and "u:***@127.0.0.1" in err
    assert "tpart" not in err and "s3cr" not in err, err


def test_passwords_mask_url_hides_a_password_it_saw_in_later_texts() -> None:
    from hpsearch.store.passwords import mask_url

    mask_url("postgresql://u:hunter2x@db.example/x")
    assert mask_url("password authentication failed, tried hunter2x") == "password authentication failed, tried ***"
    assert mask_url("password=***: cannot open it") == "password=***: cannot open it"  # masked once, left as is
