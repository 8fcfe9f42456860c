"""``zaqar-otel`` run in-process: trace-id forms, check reports, exit codes.

The collectors probed here are the test receiver or closed ports, all on
127.0.0.1: no test leaves the default endpoint (localhost) in place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from zaqar_otel import settings
from zaqar_otel.cmd import check, cli
from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.propagation import idmap

BASE_ID = "4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
TRACE_HEX = "4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b"
JAEGER = f"http://localhost:16686/trace/{TRACE_HEX}"
EXPECTED = (
    f"OSProfiler base_id: {BASE_ID}\n"
    f"OTel trace id:      {TRACE_HEX}\n"
    f"Jaeger:             {JAEGER}\n"
)

Run = Callable[..., tuple[int, str, str]]
# No OTEL_* or OSPROFILER_* variable of the machine (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def conf_file(tmp_path: Path) -> Callable[..., str]:
    """Write a zaqar.conf; returns its path."""

    def _write(text: str, name: str = "zaqar.conf") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return _write


def traced(otel: str = "exporter = console\n", **profiler: object) -> str:
    """A zaqar.conf with tracing on, these [profiler] options and [opentelemetry]."""
    options = {"enabled": "true", "hmac_keys": "k3y",
               "trace_wsgi_transport": "true", **profiler}
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    return f"[profiler]\n{lines}[opentelemetry]\n{otel}"


def http_to(url: str) -> str:
    return f"exporter = otlp_http\nendpoint = {url}\n"


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- trace-id ------------------------------------------------------------------


@pytest.mark.parametrize("given", [
    BASE_ID,
    BASE_ID.upper(),
    "{" + BASE_ID + "}",
    f"urn:uuid:{BASE_ID}",
    TRACE_HEX,
    TRACE_HEX.upper(),
    f"  {TRACE_HEX}\n",
])
def test_trace_id_prints_both_forms_and_jaeger_url(run: Run, given: str) -> None:
    """Dashes or not, any case, braces: the same three lines."""
    assert run("trace-id", given) == (0, EXPECTED, "")


def test_trace_id_from_traceparent_adds_the_span(run: Run) -> None:
    span_hex = "00f067aa0ba902b7"
    code, out, _ = run("trace-id", f"00-{TRACE_HEX}-{span_hex}-01")
    assert code == 0
    assert out.startswith(EXPECTED)
    assert f"OTel span id:       {span_hex}\n" in out
    span_uuid = idmap.uuid_from_span_id(int(TRACE_HEX, 16), int(span_hex, 16))
    assert f"OSProfiler span id: {span_uuid}\n" in out
    assert idmap.span_id_from_uuid(span_uuid) == int(span_hex, 16)


def test_trace_id_jaeger_url_option(run: Run) -> None:
    code, out, _ = run("trace-id", BASE_ID, "--jaeger-url", "https://jaeger.test/")
    assert code == 0
    assert f"Jaeger:             https://jaeger.test/trace/{TRACE_HEX}\n" in out


def test_trace_id_json(run: Run) -> None:
    code, out, _ = run("trace-id", TRACE_HEX, "--json")
    assert code == 0
    assert json.loads(out) == {"base_id": BASE_ID, "trace_id": TRACE_HEX,
                               "jaeger_url": JAEGER}


def test_trace_id_round_trips_with_the_bridge(run: Run) -> None:
    """Both directions agree with the mapping OSProfiler's OTLP driver uses."""
    base_id = str(uuid.uuid4())
    _, out, _ = run("trace-id", base_id, "--json")
    forms = json.loads(out)
    assert forms["trace_id"] == f"{idmap.trace_id_from_base_id(base_id):032x}"
    _, back, _ = run("trace-id", forms["trace_id"], "--json")
    assert json.loads(back)["base_id"] == base_id


@pytest.mark.parametrize("given", [
    "nope",
    "",
    BASE_ID[:-1],
    BASE_ID + "0",
    TRACE_HEX[:-1] + "g",
    "00000000-0000-0000-0000-000000000000",
    "0" * 32,
    f"ff-{TRACE_HEX}-00f067aa0ba902b7-01",
    f"00-{'0' * 32}-00f067aa0ba902b7-01",
    f"00-{TRACE_HEX}-{'0' * 16}-01",
    "\u0664" * 32,  # Arabic-Indic digits, which int() would take
])
def test_trace_id_invalid_exits_1_with_a_message(run: Run, given: str) -> None:
    code, out, err = run("trace-id", given)
    assert code == 1
    assert out == ""
    assert err.startswith("zaqar-otel trace-id: error: ")
    assert "trace id" in err or "span id" in err or "traceparent" in err


# -- usage ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["trace-id", "--help"],
                                  ["check", "--help"], ["-h"]])
def test_help_exits_0(run: Run, argv: list[str]) -> None:
    code, out, _ = run(*argv)
    assert code == 0
    assert out.startswith("usage: zaqar-otel")


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["trace-id"],
                                  ["trace-id", BASE_ID, "--bogus"],
                                  ["check", "--timeout", "soon"],
                                  ["check", "--timeout", "0"]])
def test_wrong_usage_exits_2(run: Run, argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert "usage: zaqar-otel" in err


def test_main_defaults_to_sys_argv(monkeypatch: pytest.MonkeyPatch,
                                   run: Run) -> None:
    """The console script calls main() without arguments."""
    monkeypatch.setattr("sys.argv", ["zaqar-otel", "trace-id", BASE_ID])
    code = cli.main()
    assert code == 0


# -- check: loading ------------------------------------------------------------


def test_check_missing_config_file_exits_2(run: Run, tmp_path: Path) -> None:
    code, out, err = run("check", "--config-file", str(tmp_path / "nope.conf"))
    assert code == 2
    assert "no such config file" in err
    assert "nope.conf" in err


def test_check_missing_config_dir_exits_2(run: Run, tmp_path: Path) -> None:
    code, _, err = run("check", "--config-dir", str(tmp_path / "nope.d"))
    assert code == 2
    assert "no such config directory" in err


def test_check_unparsable_file_exits_1(run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file("this is not ini\n[profiler\n")
    code, _, err = run("check", "--config-file", path)
    assert code == 1
    assert "zaqar-otel check: error: " in err
    assert path in err


def test_check_later_file_and_config_dir_win(
        run: Run, conf_file: Callable[..., str], tmp_path: Path) -> None:
    """Files and directories are layered as oslo.config layers them."""
    first = conf_file("[profiler]\nenabled = true\n", "a.conf")
    second = conf_file(traced(), "b.conf")
    conf_dir = tmp_path / "zaqar.conf.d"
    conf_dir.mkdir()
    (conf_dir / "10-redis.conf").write_text("[profiler]\ntrace_redis = true\n")
    code, out, _ = run("check", "--config-file", first, "--config-file", second,
                       "--config-dir", str(conf_dir))
    assert code == 0, out
    assert f"{first}, {second}, {conf_dir}/*.conf" in out
    assert _switch(out, "trace_redis") == "on"


# -- check: on / off -----------------------------------------------------------


def test_check_stock_key_is_an_error_naming_the_option(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file("[profiler]\nenabled = true\n")  # hmac_keys = SECRET_KEY
    code, out, _ = run("check", "--config-file", path)
    assert code == 1
    assert "[profiler] hmac_keys" in out
    assert "SECRET_KEY" in out
    assert "error:" in out
    assert "tracing                    off" in out


def test_check_stock_key_allowed_is_a_warning(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced("exporter = console\nallow_stock_hmac_key = true\n",
                            hmac_keys="SECRET_KEY"))
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    assert "warning: [profiler] hmac_keys holds the stock key" in out


def test_check_disabled_says_nothing_would_be_traced(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    path = conf_file(f"[profiler]\nenabled = false\n[opentelemetry]\n"
                     f"{http_to(receiver.endpoint)}")
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    assert "nothing would be traced" in out
    assert "[profiler] enabled = false" in out
    assert receiver.requests == 0  # nothing to probe


def test_check_otel_sdk_disabled(run: Run, conf_file: Callable[..., str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    code, out, _ = run("check", "--config-file", conf_file(traced()))
    assert code == 0
    assert "off (OTEL_SDK_DISABLED=true): nothing would be traced" in out


def test_check_says_which_path_spans_take_and_why(
        run: Run, conf_file: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ZAQAR_FAST_PATH", raising=False)
    code, out, _ = run("check", "--config-file", conf_file(traced(
        "exporter = console\n")))
    assert code == 0
    line = next(x for x in out.splitlines() if "fast_path" in x)
    assert "auto spans take the fast (opentelemetry-sdk 1.45." in line
    assert "a tested release; its spans match the SDK's) path" in line
    monkeypatch.setenv("OTEL_ZAQAR_FAST_PATH", "off")
    code, out, _ = run("check", "--config-file", conf_file(traced(
        "exporter = console\n")))
    assert code == 0
    assert ("off  spans take the stock (OTEL_ZAQAR_FAST_PATH=off) path"
            in out)


def test_check_unknown_exporter_names_the_option(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced("exporter = jaeger\n"))
    code, out, _ = run("check", "--config-file", path)
    assert code == 1
    assert "[opentelemetry] exporter" in out
    assert "'jaeger'" in out
    assert path in out
    assert "LocationInfo" not in out


def test_check_out_of_range_option_names_it(
        run: Run, conf_file: Callable[..., str]) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced("sample_ratio = 2\n")))
    assert code == 1
    assert "[opentelemetry] sample_ratio" in out


# -- check: what would be traced -----------------------------------------------


def _switch(out: str, option: str) -> str:
    for line in out.splitlines():
        words = line.split()
        if words[:1] == [option]:
            return words[1]
    raise AssertionError(f"no line for {option} in:\n{out}")


def _warnings(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines()
            if line.strip().startswith("warning:")]


def test_check_lists_every_switch(run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(trace_redis="true", trace_message_store="true")
                     + "sample_ratio = 0.25\nhonor_w3c_sampled = true\n"
                     "[drivers]\nmessage_store = redis\n")
    code, out, _ = run("check", "--config-file", path)
    assert code == 0, out
    assert _switch(out, "trace_wsgi_transport") == "on"
    assert _switch(out, "trace_message_store") == "on"
    assert _switch(out, "trace_redis") == "on"
    for off in ("trace_management_store", "trace_mongodb", "trace_sqlalchemy",
                "trace_pooling", "trace_requests"):
        assert _switch(out, off) == "off"
    assert _switch(out, "sample_ratio") == "0.25"
    assert "25% of the others" in out
    assert _switch(out, "honor_w3c_sampled") == "on"
    assert "exporter                   console" in out
    assert "No problems found." in out


def test_check_warns_trace_wsgi_transport_off(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(trace_wsgi_transport="false"))
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    assert ("warning: [profiler] trace_wsgi_transport = false: no request would "
            "be traced") in out
    assert "0 errors, 1 warning." in out


def test_check_warns_mongodb_tracing_on_redis_stores(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(trace_mongodb="true", trace_redis="true")
                     + "[drivers]\nmessage_store = redis\n"
                     "management_store = redis\n")
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    [warning] = _warnings(out)
    assert warning.startswith("warning: [profiler] trace_mongodb = true, but no "
                              "store is MongoDB")
    assert "message_store = redis" in warning


def test_check_warns_redis_tracing_on_default_mongodb_stores(
        run: Run, conf_file: Callable[..., str]) -> None:
    """Zaqar's default stores are MongoDB."""
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(trace_redis="true", trace_mongodb="true")))
    assert code == 0
    [warning] = _warnings(out)
    assert "[profiler] trace_redis = true" in warning


def test_check_no_backend_verdict_with_pooling(
        run: Run, conf_file: Callable[..., str]) -> None:
    """With pooling, the pools may use any backend."""
    path = conf_file("[DEFAULT]\npooling = true\n"
                     + traced(trace_redis="true", trace_mongodb="true",
                              trace_pooling="true")
                     + "[drivers]\nmessage_store = redis\n"
                     "management_store = sqlalchemy\n")
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    assert _warnings(out) == []
    assert "pooling on" in out


def test_check_warns_sqlalchemy_without_sql_store(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(trace_sqlalchemy="true"))
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    [warning] = _warnings(out)
    assert warning.startswith("warning: [profiler] trace_sqlalchemy = true, but "
                              "[drivers] management_store = mongodb")


def test_check_sqlalchemy_with_sql_store_is_fine(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(trace_sqlalchemy="true", trace_redis="true")
                     + "[drivers]\nmessage_store = redis\n"
                     "management_store = sqlalchemy\n")
    code, out, _ = run("check", "--config-file", path)
    assert (code, _warnings(out)) == (0, [])


def test_check_warns_pooling_trace_without_pooling(
        run: Run, conf_file: Callable[..., str]) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(trace_pooling="true")))
    assert code == 0
    [warning] = _warnings(out)
    assert "[profiler] trace_pooling = true, but [DEFAULT] pooling = false" in warning


def test_check_warns_exporter_none(run: Run, conf_file: Callable[..., str]) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced("exporter = none\n")))
    assert code == 0
    assert "warning: [opentelemetry] exporter = none" in out


def test_check_names_other_osprofiler_driver_without_its_url(
        run: Run, conf_file: Callable[..., str]) -> None:
    path = conf_file(traced(connection_string="redis://:hunter2@127.0.0.1:1"))
    code, out, _ = run("check", "--config-file", path)
    assert code == 0
    assert "redis:// also receives the trace points" in out
    assert "hunter2" not in out


# -- check: where spans go -----------------------------------------------------


def test_check_http_receiver_answers(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(http_to(receiver.endpoint))))
    assert code == 0, out
    assert (f"endpoint                   {receiver.traces_url}  "
            "(from [opentelemetry] endpoint)") in out
    assert "collector                  answers: HTTP 200" in out
    assert "No problems found." in out
    assert receiver.requests == 1
    assert receiver.raw == [b""]  # an empty ExportTraceServiceRequest
    assert receiver.spans() == []


def test_check_closed_port_is_an_error_naming_the_endpoint(
        run: Run, conf_file: Callable[..., str]) -> None:
    url = closed_url()
    code, out, _ = run("check", "--config-file", conf_file(traced(http_to(url))))
    assert code == 1
    assert "collector                  unreachable" in out
    assert (f"error:   the collector at {url}/v1/traces does not answer") in out
    assert "set [opentelemetry] endpoint" in out


def test_check_collector_error_status(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    receiver.mode = "error"
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(http_to(receiver.endpoint))))
    assert code == 1
    assert "answers with an error: HTTP 503" in out


def test_check_wrong_path_is_a_404(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(http_to(receiver.endpoint + "/otlp"))))
    assert code == 1
    assert "HTTP 404" in out
    assert "no OTLP traces receiver at" in out
    assert "[opentelemetry] endpoint" in out


def test_check_hung_collector_times_out(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    receiver.mode = "hang"
    code, out, _ = run("check", "--timeout", "0.3", "--config-file",
                       conf_file(traced(http_to(receiver.endpoint))))
    assert code == 1
    assert "no answer within 0.3 s" in out


def test_check_endpoint_from_the_environment(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint + "/")
    code, out, _ = run("check", "--config-file",
                       conf_file(traced("exporter = otlp_http\n")))
    assert code == 0, out
    assert f"{receiver.traces_url}  (from OTEL_EXPORTER_OTLP_ENDPOINT)" in out


def test_check_env_endpoint_unreachable_says_where_it_came_from(
        run: Run, conf_file: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_url() + "/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    code, out, _ = run("check", "--config-file",
                       conf_file(traced("exporter = otlp_http\n")))
    assert code == 1
    assert ("set [opentelemetry] endpoint (now from "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)") in out


def test_check_never_prints_headers(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    otel = http_to(receiver.endpoint) + "headers = x-api-key=s3cr3t,x-org=acme\n"
    code, out, err = run("check", "--config-file", conf_file(traced(otel)))
    assert code == 0, out
    assert "2 headers set in [opentelemetry] headers" in out
    for secret in ("s3cr3t", "x-api-key", "acme", "x-org"):
        assert secret not in out + err
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k3n")
    code, out, err = run("check", "--config-file",
                         conf_file(traced(http_to(receiver.endpoint))))
    assert code == 0, out
    assert "1 header set in $OTEL_EXPORTER_OTLP_HEADERS" in out
    assert "t0k3n" not in out + err
    assert "authorization" not in out + err


def test_check_missing_certificate_variable(
        run: Run, conf_file: Callable[..., str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path / "ca.pem"))
    url = f"https://127.0.0.1:{free_port()}"
    code, out, _ = run("check", "--config-file", conf_file(traced(http_to(url))))
    assert code == 1
    assert "$OTEL_EXPORTER_OTLP_CERTIFICATE names no file" in out
    assert "[opentelemetry] certificate" in out
    assert "not probed" in out


def test_check_missing_certificate_option(
        run: Run, conf_file: Callable[..., str], tmp_path: Path) -> None:
    otel = http_to(closed_url()) + f"certificate = {tmp_path / 'ca.pem'}\n"
    code, out, _ = run("check", "--config-file", conf_file(traced(otel)))
    assert code == 1
    assert "[opentelemetry] certificate: no file" in out


def test_check_grpc_receiver_reachable(
        run: Run, conf_file: Callable[..., str]) -> None:
    with OTLPReceiver(protocol="grpc") as grpc_receiver:
        otel = f"exporter = otlp_grpc\nendpoint = {grpc_receiver.endpoint}\n"
        code, out, _ = run("check", "--config-file", conf_file(traced(otel)))
    assert code == 0, out
    assert f"reachable at 127.0.0.1:{grpc_receiver.port}" in out


def test_check_grpc_closed_port(run: Run, conf_file: Callable[..., str]) -> None:
    port = free_port()
    otel = f"exporter = otlp_grpc\nendpoint = http://127.0.0.1:{port}\n"
    code, out, _ = run("check", "--config-file", conf_file(traced(otel)))
    assert code == 1
    assert f"the collector at 127.0.0.1:{port} is unreachable" in out
    assert "[opentelemetry] endpoint" in out


def test_check_http_exporter_at_a_grpc_port(
        run: Run, conf_file: Callable[..., str]) -> None:
    with OTLPReceiver(protocol="grpc") as grpc_receiver:
        code, out, _ = run("check", "--config-file",
                           conf_file(traced(http_to(grpc_receiver.endpoint))))
    assert code == 1
    assert "does not speak HTTP" in out
    assert "exporter = otlp_grpc" in out


# -- check: helpers ------------------------------------------------------------


def _settings(exporter: str, **args: object) -> settings.Settings:
    return settings.Settings(enabled=True, hmac_keys=("k",), exporter=exporter,
                             exporter_args=args)


@pytest.mark.parametrize(("exporter", "environ", "expected"), [
    ("otlp_http", {}, (settings.DEFAULT_HTTP_ENDPOINT, "default")),
    ("otlp_grpc", {}, (settings.DEFAULT_GRPC_ENDPOINT, "default")),
    ("otlp_http", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
     ("http://c:4318/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT")),
    ("otlp_grpc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
     ("http://c:4317", "OTEL_EXPORTER_OTLP_ENDPOINT")),
    ("otlp_http", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"},
     ("http://t:1/x", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
    ("otlp_http", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": " "},
     (settings.DEFAULT_HTTP_ENDPOINT, "default")),
])
def test_resolve_endpoint(exporter: str, environ: dict[str, str],
                          expected: tuple[str, str]) -> None:
    endpoint = settings.endpoint(_settings(exporter), environ)
    assert (endpoint.url, endpoint.source) == expected


def test_resolve_endpoint_option_wins() -> None:
    endpoint = settings.endpoint(
        _settings("otlp_http", endpoint="http://o:1/v1/traces"),
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"})
    assert (endpoint.url, endpoint.source) == ("http://o:1/v1/traces",
                                               "[opentelemetry] endpoint")


@pytest.mark.parametrize(("url", "target"), [
    ("http://collector:4317", ("collector", 4317)),
    ("collector:4317", ("collector", 4317)),
    ("https://collector", ("collector", 443)),
    ("http://[::1]:4317", ("::1", 4317)),
])
def test_grpc_target(url: str, target: tuple[str, int]) -> None:
    assert check.grpc_target(url) == target


def test_probe_http_rejects_non_http_urls() -> None:
    assert check.probe_http("ftp://127.0.0.1/x", 1).kind == "url"
    assert check.probe_http("http://127.0.0.1:99999/x", 1).kind == "url"


def test_probe_http_bad_header_is_not_shown(receiver: OTLPReceiver) -> None:
    probe = check.probe_http(receiver.traces_url, 1, {"x-key": "s3cr3t\r\nevil"})
    assert probe.kind == "headers"
    assert "s3cr3t" not in probe.text


# -- check: metrics -------------------------------------------------------------


def test_check_metrics_off_by_default_and_on_at_v1_metrics(
        run: Run, conf_file: Callable[..., str], receiver: OTLPReceiver) -> None:
    code, out, _ = run("check", "--config-file",
                       conf_file(traced(http_to(receiver.endpoint))))
    assert code == 0
    assert "metrics                    off ([opentelemetry] metrics" in out
    otel = http_to(receiver.endpoint) + "metrics = true\nmetrics_max_queues = 7\n"
    code, out, _ = run("check", "--config-file", conf_file(traced(otel)))
    assert code == 0, out
    metrics = out[out.index("Metrics ([opentelemetry] metrics)"):]
    assert "on, every request; exported every 60 s" in metrics
    assert "up to 7 per process, then '_other'" in metrics
    assert f"{receiver.metrics_url}  (from [opentelemetry] endpoint)" in metrics
    assert "collector                  answers: HTTP 200" in metrics
    assert receiver.metric_requests == 1 and receiver.points() == []


def test_check_metrics_to_a_traces_only_endpoint_is_an_error(
        run: Run, conf_file: Callable[..., str]) -> None:
    """Jaeger's OTLP receiver takes /v1/traces only."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class TracesOnly(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TracesOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, _ = run("check", "--config-file",
                           conf_file(traced(http_to(url) + "metrics = true\n")))
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert "no OTLP metrics receiver at" in out and "metrics = false" in out


def test_check_reports_a_metrics_exporter_it_cannot_use(
        run: Run, conf_file: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    code, out, _ = run("check", "--config-file", conf_file(traced()))
    assert code == 1
    assert "metrics would stay off: OTEL_METRICS_EXPORTER='prometheus'" in out
