"""The private PostgreSQL server that fault tests restart and crash instead of the shared one."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests.pgserver import PrivateServer


def _query(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT 41 + 1").fetchone()
    assert row is not None
    return int(row[0])


def _backend_pid(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(str(row[0]))


def _refuses(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def test_starts_and_answers_queries(private_pg: PrivateServer) -> None:
    assert private_pg.running
    assert private_pg.dsn == f"postgresql://postgres@127.0.0.1:{private_pg.port}/postgres"
    assert _query(private_pg.dsn) == 42
    assert (private_pg.data_dir / "PG_VERSION").read_text().strip() == "15"
    with psycopg.connect(private_pg.dsn) as conn:
        row = conn.execute("SELECT current_setting('fsync'), current_user").fetchone()
    assert row == ("off", "postgres")


def test_restart_drops_connections_and_accepts_new_ones(private_pg: PrivateServer) -> None:
    port = private_pg.port
    with psycopg.connect(private_pg.dsn, autocommit=True) as old:
        old.execute("CREATE TABLE kept (n int)")
        old.execute("INSERT INTO kept VALUES (7)")
        pid = _backend_pid(old)

        private_pg.restart()

        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    assert private_pg.port == port
    with psycopg.connect(private_pg.dsn) as new:
        assert _backend_pid(new) != pid
        assert new.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_kill_makes_it_unreachable_and_start_recovers_it(private_pg: PrivateServer) -> None:
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE survived (n int)")
        conn.execute("INSERT INTO survived VALUES (1)")

        private_pg.kill()

        assert not private_pg.running
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert _refuses(private_pg.port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_pg.dsn, connect_timeout=2)

    private_pg.start()

    assert "database system was not properly shut down" in private_pg.log_file.read_text()
    with psycopg.connect(private_pg.dsn) as conn:
        assert conn.execute("SELECT n FROM survived").fetchall() == [(1,)]


def test_stop_then_start_keeps_the_port_and_the_data(private_pg: PrivateServer) -> None:
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
    private_pg.stop("immediate")
    assert not private_pg.running
    assert _refuses(private_pg.port)
    private_pg.stop()  # already stopped: a no-op
    private_pg.start()
    assert _query(private_pg.dsn) == 42
    with psycopg.connect(private_pg.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)


def test_an_exception_in_the_with_block_still_removes_everything() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), PrivateServer() as server:
        base, port = server.base_dir, server.port
        assert _query(server.dsn) == 42
        raise Boom

    assert not base.exists()
    assert _refuses(port)
    assert not server.running
    server.close()  # twice is fine


def test_two_servers_at_once_get_their_own_ports_and_directories() -> None:
    with PrivateServer() as first, PrivateServer() as second:
        assert first.port != second.port
        assert first.data_dir != second.data_dir
        with psycopg.connect(first.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_in_first (n int)")
        with psycopg.connect(second.dsn) as conn:
            row = conn.execute("SELECT to_regclass('only_in_first')").fetchone()
        assert row == (None,)
        first.restart()
        assert _query(second.dsn) == 42
        assert _query(first.dsn) == 42
