"""Pool URIs as exported on pool lookup spans: no credentials, ever."""

from __future__ import annotations

import pytest

from zaqar_otel.redact import redact_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("redis://user:pw@host:6379/0?password=x", "redis://host:6379/0"),
        ("redis://:pw@host", "redis://host"),
        ("redis://host:6379/0?socket_timeout=1&password=zz", "redis://host:6379/0"),
        ("redis://host/0#fragment", "redis://host/0"),
        ("mongodb://admin:s3cr3t@db.example:27017/zaqar?authSource=admin",
         "mongodb://db.example:27017/zaqar"),
        ("mongodb+srv://u:p@cluster.example/zaqar", "mongodb+srv://cluster.example/zaqar"),
        ("mysql+pymysql://zaqar:pw@localhost/zaqar?charset=utf8",
         "mysql+pymysql://localhost/zaqar"),
        ("mongodb://db.example:27017", "mongodb://db.example:27017"),
    ],
)
def test_credentials_and_query_are_stripped(uri: str, expected: str) -> None:
    """User, password and query string never reach the span; host/path do."""
    assert redact_uri(uri) == expected


def test_password_with_at_sign_is_stripped() -> None:
    """An unescaped '@' in the password does not leak its tail."""
    redacted = redact_uri("mongodb://user:p@ss@db.example:27017/zaqar")
    assert redacted == "mongodb://db.example:27017/zaqar"


def test_unix_socket_uri_drops_query() -> None:
    """Zaqar's redis:/path/to/sock?password=... form loses its query."""
    assert redact_uri("redis:/tmp/redis.sock?password=x") == "redis:/tmp/redis.sock"


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://u:s3cr3t@h1:27017,h2:27018/zaqar?replicaSet=rs0",
        "redis://u:s3cr3t@host:99999/0",
        "redis://u:s3cr3t@host:abc/0",
        "http://[::1",
        "",
        "not a uri at all s3cr3t",
    ],
)
def test_unparsable_input_does_not_raise_or_leak(uri: str) -> None:
    """Odd URIs give a string without the password, never an exception."""
    redacted = redact_uri(uri)
    assert isinstance(redacted, str)
    if "@" in uri:
        assert "s3cr3t" not in redacted


def test_ipv6_host_keeps_brackets() -> None:
    """An IPv6 pool host stays a valid URI: redis://[::1]:6379/0."""
    assert redact_uri("redis://u:p@[::1]:6379/0") == "redis://[::1]:6379/0"


def test_replica_set_keeps_every_host() -> None:
    """A MongoDB replica-set pool still says where it is."""
    uri = "mongodb://u:s3cr3t@h1:27017,h2:27018/zaqar?replicaSet=rs0"
    assert redact_uri(uri) == "mongodb://h1:27017,h2:27018/zaqar"


def test_exception_message_keeps_the_first_line_without_secrets() -> None:
    """SQL parameters, webhook tokens and URI passwords never leave."""
    from zaqar_otel.redact import message

    sql = ("(sqlite3.IntegrityError) UNIQUE constraint failed: Pools.name\n"
           "[SQL: INSERT INTO Pools ...]\n[parameters: ('p', 'redis://u:s3cr3t@h')]")
    assert message(sql) == (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: Pools.name")
    webhook = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
               "with url: /hook?token=s3cr3t (Caused by NewConnectionError)")
    assert "s3cr3t" not in message(webhook)
    # A webhook's path may be its secret (Slack, Teams, Discord).
    assert "url: ... (Caused" in message(webhook)
    assert message("no redis://zaqar:s3cr3t@db:6379/0 here") == (
        "no redis://db:6379 here")
    assert message("at https://hooks.slack.com/services/T/B/s3cr3t down") == (
        "at https://hooks.slack.com down")
    assert len(message("x" * 10_000)) == 256


def test_stacktrace_keeps_frames_and_redacts_exception_lines() -> None:
    from zaqar_otel.redact import stacktrace

    text = ('Traceback (most recent call last):\n  File "a.py", line 1, in f\n'
            '    post(url)\nConnectionError: url: /hook?token=s3cr3t\n'
            "[parameters: ('s3cr3t')]\n\nDuring handling of the above exception:\n")
    redacted = stacktrace(text)
    assert '  File "a.py", line 1, in f' in redacted and "    post(url)" in redacted
    assert "s3cr3t" not in redacted and "ConnectionError: url: /hook" in redacted


@pytest.mark.parametrize(("url", "expected"), [
    ("https://hooks.slack.com/services/T0/B0/s3cr3t", "https://hooks.slack.com"),
    ("https://u:pw@Example.com:8443/a;token=s3cr3t?x=1#f", "https://example.com:8443"),
    ("http://[::1]:80/hook", "http://[::1]:80"),
    ("mailto:someone@example.com", "mailto"),
    ("trust+https://hook.example/x", "trust+https://hook.example"),
    ("http://h\x1bx/x", "http"),
    ("http://h\x1b[31m/x", "(unparsable)"),
    ("http://h:notaport/", "(unparsable)"),
])
def test_origin_is_scheme_host_and_port_only(url: str, expected: str) -> None:
    from zaqar_otel.redact import origin

    assert origin(url) == expected


@pytest.mark.parametrize("password", ["P@W0RD", "P/W0RD", "P?W0RD", "P%W0RD",
                                      "P W0RD", "P[W0RD", "a@b/c?d e[f%g"])
def test_userinfo_masks_a_password_whatever_it_holds(password: str) -> None:
    from zaqar_otel.redact import userinfo

    line = (f"exporting to http://alice:{password}@127.0.0.1:4318/v1/traces "
            f"failed; and https://u:{password}@other:1 too")
    masked = userinfo(line)
    assert "W0RD" not in masked and "alice" not in masked and password not in masked
    assert masked == ("exporting to http://***@127.0.0.1:4318/v1/traces failed; "
                      "and https://***@other:1 too")


def test_remembered_environment_values_are_masked_in_any_form() -> None:
    from zaqar_otel import redact

    secrets = redact.Secrets()
    secrets.remember_environment({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://alice:zz x://y@h:1",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=K3y/Va+lue;x, other = v2v2v2"})
    line = "zz x://y@h:1 K3y/Va+lue;x K3y%2FVa%2Blue%3Bx v2v2v2"
    text = secrets.mask(line)
    assert "zz" not in text and "K3y" not in text and "v2v2" not in text, text
    # Remembered by that owner only: the module keeps no secret of its own.
    assert "K3y/Va+lue;x" in redact.userinfo(line)
    assert "K3y/Va+lue;x" in redact.Secrets().mask(line)


@pytest.mark.parametrize("names", [("url.full",), ("http.url",),
                                   ("url.full", "http.url")])
def test_the_webhook_url_is_set_under_the_modes_names_only(
        names: tuple[str, ...]) -> None:
    """The requests hook never adds the other semantic-convention mode's URL
    attribute (url.full / http.url) to a webhook call's span."""
    from types import SimpleNamespace

    from opentelemetry.sdk.trace import TracerProvider

    from zaqar_otel.redact import requests_hook_for

    span = TracerProvider().get_tracer("t").start_span("POST")
    requests_hook_for(names)(span, SimpleNamespace(
        url="https://hooks.example/services/T0/B0/secret?token=x"))
    span.end()
    assert dict(span.attributes or {}) == dict.fromkeys(names, "https://hooks.example")
