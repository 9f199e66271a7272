"""A throwaway PostgreSQL server on loopback for the tests marked `postgres`.

Started once per test session with initdb/pg_ctl in a temporary folder, on a
free port of 127.0.0.1, trust authentication, stopped at the end. As root it
runs as the `postgres` system user (PostgreSQL refuses to run as root).

When no server can be started the tests are skipped with the reason, except
under CI (CI=true), where that is a failure: CI must run them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root and `runuser` is missing to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *cmd]


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL server cannot be started: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the postgres tests: see the Makefile's test target)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database on loopback: postgresql://postgres@127.0.0.1:PORT/hpsearch."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("initdb/pg_ctl not found (Debian: apt-get install postgresql)")
    try:
        import psycopg  # the driver SQLAlchemy uses for postgresql:// URLs
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_server_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off -c max_connections=100"
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.SubprocessError, OSError, RuntimeError) as e:
        detail = getattr(e, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"{e} {detail.decode(errors='replace').strip()[-300:]}")
    try:
        import psycopg  # the driver SQLAlchemy uses for postgresql:// URLs

        conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)
        conn.cursor().execute("CREATE DATABASE hpsearch")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/hpsearch"
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A database of its own for one test (created from the session server, dropped after)."""
    import psycopg

    base, _, _ = postgres_url.rpartition("/")
    name = f"t_{os.getpid()}_{_free_port()}"
    admin = psycopg.connect(base + "/postgres", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
