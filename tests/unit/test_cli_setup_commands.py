"""``zaqar-otel init-db`` and ``zaqar-otel sign-headers``, run in-process;
and ``demo --otlp-endpoint`` at a closed port, refused before anything starts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from zaqar_otel.cmd import demo
from zaqar_otel.demo.processes import free_port
from zaqar_otel.propagation import codec, idmap

Run = Callable[..., tuple[int, str, str]]
# No OTEL_* or OSPROFILER_* variable of the machine (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("clean_environment")


def _headers(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_sign_headers_verify_under_the_key_and_name_the_trace(run: Run) -> None:
    code, out, err = run("sign-headers", "--hmac-key", "s3cret-key")
    assert code == 0
    headers = _headers(out)
    assert sorted(headers) == ["X-Trace-HMAC", "X-Trace-Info"]
    info = codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                        ["s3cret-key"])
    assert info is not None
    assert info.parent_id == info.base_id  # a root caller, as the CLI signs
    trace_hex = f"{idmap.trace_id_from_base_id(info.base_id):032x}"
    assert err == (f"Trace ID: {info.base_id}  (OTel / Jaeger trace id "
                   f"{trace_hex})\n")
    assert codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                        ["other"]) is None
    assert "s3cret-key" not in out + err


def test_sign_headers_key_from_the_environment(
        run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSPROFILER_HMAC_KEYS", " ,first-key,second-key")
    code, out, _ = run("sign-headers")
    assert code == 0
    headers = _headers(out)
    assert codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                        ["first-key"]) is not None


def test_sign_headers_without_a_key_exits_2(run: Run) -> None:
    code, out, err = run("sign-headers")
    assert (code, out) == (2, "")
    assert "--hmac-key" in err and "OSPROFILER_HMAC_KEYS" in err


def test_sign_headers_twice_are_two_traces(run: Run) -> None:
    first = _headers(run("sign-headers", "--hmac-key", "k")[1])
    second = _headers(run("sign-headers", "--hmac-key", "k")[1])
    assert first["X-Trace-Info"] != second["X-Trace-Info"]


def _conf(tmp_path: Path, store: str, uri: str) -> str:
    path = tmp_path / "zaqar.conf"
    path.write_text(f"[drivers]\nmanagement_store = {store}\n"
                    f"[drivers:management_store:sqlalchemy]\nuri = {uri}\n")
    return str(path)


def test_init_db_creates_zaqars_tables_once(run: Run, tmp_path: Path) -> None:
    pytest.importorskip("zaqar")
    db = tmp_path / "zaqar.sqlite"
    conf = _conf(tmp_path, "sqlalchemy", f"sqlite:///{db}")
    code, out, err = run("init-db", "--config-file", conf)
    assert (code, err) == (0, "")
    assert out == f"created Queues, Pools, Flavors, Catalogue in sqlite:///{db}\n"
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT INTO Queues (project, name) VALUES ('p', 'q')")
    code, out, _ = run("init-db", "--config-file", conf)
    assert code == 0
    assert out == f"Zaqar's tables are already in sqlite:///{db}; nothing done\n"
    with sqlite3.connect(db) as connection:  # kept, not recreated
        assert connection.execute("SELECT name FROM Queues").fetchall() == [("q",)]


def test_init_db_other_management_store_does_nothing(
        run: Run, tmp_path: Path) -> None:
    pytest.importorskip("zaqar")
    code, out, _ = run("init-db", "--config-file",
                       _conf(tmp_path, "mongodb", "sqlite:///unused"))
    assert code == 0
    assert out.startswith("[drivers] management_store = mongodb: ")
    assert not (tmp_path / "unused").exists()


def test_init_db_refused_hides_the_password(run: Run, tmp_path: Path) -> None:
    pytest.importorskip("zaqar")
    conf = _conf(tmp_path, "sqlalchemy", "nosuchdialect://user:pa55word@host/db")
    code, out, err = run("init-db", "--config-file", conf)
    assert code == 1
    assert "pa55word" not in out + err
    assert err.startswith("zaqar-otel init-db: error: ")


def test_init_db_missing_file_exits_2(run: Run, tmp_path: Path) -> None:
    code, _, err = run("init-db", "--config-file", str(tmp_path / "none.conf"))
    assert code == 2
    assert "no such config file" in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_demo_to_a_closed_port_says_connection_refused(
        run: Run, protocol: str) -> None:
    if demo.missing():
        pytest.skip("needs the demo extra")
    endpoint = f"http://user:pa55@127.0.0.1:{free_port()}"
    code, out, err = run("demo", "--otlp-endpoint", endpoint,
                         "--otlp-protocol", protocol)
    assert (code, out) == (1, "")
    assert err == (f"zaqar-otel demo: the collector at http://***@127.0.0.1:"
                   f"{endpoint.rsplit(':', 1)[1]} does not answer: connection "
                   "refused; nothing started\n")


def test_demo_endpoint_not_a_url(run: Run) -> None:
    if demo.missing():
        pytest.skip("needs the demo extra")
    code, _, err = run("demo", "--otlp-endpoint", "collector:4318")
    assert code == 1
    assert "is not an http(s) URL" in err


@pytest.mark.parametrize("command", ["init-db", "sign-headers"])
def test_help_exits_0(run: Run, command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0
    assert out.startswith(f"usage: zaqar-otel {command} ")
    assert "exit status:" in out
