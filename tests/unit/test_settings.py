"""zaqar.conf + OTEL_* resolved by settings.load, and the options it reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from oslo_config import cfg
from osprofiler import opts as profiler_opts
from zaqar.conf import profiler as zaqar_profiler

from zaqar_otel import opts, switches
from zaqar_otel.settings import (
    SDK_NUMBERS,
    ConfigError,
    Endpoint,
    MetricsSettings,
    Settings,
    load,
    metrics_endpoint,
)

ON = "[profiler]\nenabled = true\nhmac_keys = k3y\n"

Loader = Callable[..., Settings]


def parsed_conf(path: Path, text: str) -> cfg.ConfigOpts:
    """A ConfigOpts registered and parsed the way zaqar-server does it."""
    conf = cfg.ConfigOpts()
    profiler_opts.set_defaults(conf)
    conf.register_opts(zaqar_profiler.ALL_OPTS, group=zaqar_profiler.GROUP_NAME)
    path.write_text(text)
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


@pytest.fixture
def load_conf(tmp_path: Path) -> Loader:
    """load() of a zaqar.conf with this text, under exactly these variables."""

    def _load(text: str, environ: Mapping[str, str] | None = None) -> Settings:
        return load(parsed_conf(tmp_path / "zaqar.conf", text), environ or {})

    return _load


def otel(**options: object) -> str:
    """ON plus an [opentelemetry] section with these options."""
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    return f"{ON}[opentelemetry]\n{lines}"


# -- on / off -----------------------------------------------------------------


def test_profiler_disabled_gives_disabled_settings(load_conf: Loader) -> None:
    """enabled = false: tracing stays off, even with the stock key."""
    assert load_conf("[profiler]\nenabled = false\n") == Settings(enabled=False)


def test_profiler_unset_is_disabled(load_conf: Loader) -> None:
    """A zaqar.conf without [profiler] traces nothing."""
    assert load_conf("") == Settings(enabled=False)


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_otel_sdk_disabled_turns_tracing_off(load_conf: Loader, value: str) -> None:
    """OTEL_SDK_DISABLED=true wins over [profiler] enabled = true."""
    assert load_conf(ON, {"OTEL_SDK_DISABLED": value}) == Settings(
        enabled=False, off_because="OTEL_SDK_DISABLED=true")


def test_otel_sdk_disabled_false_keeps_tracing_on(load_conf: Loader) -> None:
    """Only "true" disables; any other value leaves tracing on."""
    assert load_conf(ON, {"OTEL_SDK_DISABLED": "false"}).enabled


def test_enabled_defaults(load_conf: Loader) -> None:
    """A minimal enabled config: OTLP/HTTP, SDK fallbacks, no sampling."""
    s = load_conf(ON)
    assert s.enabled
    assert s.hmac_keys == ("k3y",)
    assert s.exporter == "otlp_http"
    assert s.exporter_args == {}
    assert s.batch_args == {}
    assert s.service_name is None
    assert s.sample_ratio == 0.0
    assert s.honor_w3c_sampled is False
    assert s.shutdown_timeout == 5.0


def test_profiler_switches_are_passed_through(load_conf: Loader) -> None:
    """Zaqar's, osprofiler's and zaqar-otel's trace_* switches all land."""
    s = load_conf(ON + "trace_wsgi_transport = true\ntrace_message_store = true\n"
                  "trace_management_store = true\ntrace_sqlalchemy = true\n"
                  "trace_requests = true\ntrace_redis = true\n"
                  "trace_mongodb = true\ntrace_pooling = true\n"
                  "connection_string = redis://localhost:6379\n")
    assert all(s.on(switch) for switch in (
        switches.WSGI, switches.MESSAGE_STORE, switches.MANAGEMENT_STORE,
        switches.SQLALCHEMY, switches.REQUESTS, switches.REDIS, switches.MONGODB,
        switches.POOLING))
    assert s.connection_string == "redis://localhost:6379"


def test_each_switch_of_zaqar_otel_has_its_install_step() -> None:
    """A switch is one row: its option, its setting (``Settings.on``) and
    its install step, keyed by the switch itself."""
    from zaqar_otel.backends import instrumentors

    ours = {s for s in switches.SWITCHES if s.owner == switches.OURS}
    assert ours <= set(instrumentors.STEPS)
    assert set(instrumentors.STEPS) <= set(switches.SWITCHES)


# -- exporter -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf_value", "environ", "expected"),
    [
        (None, {}, "otlp_http"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp_http"),
        (None, {"OTEL_TRACES_EXPORTER": "console"}, "console"),
        (None, {"OTEL_TRACES_EXPORTER": " None "}, "none"),
        (None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_grpc"),
        (None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp_http"),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp_grpc"),
        ("otlp_http", {"OTEL_TRACES_EXPORTER": "console"}, "otlp_http"),
        ("otlp_http", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_http"),
        ("none", {"OTEL_TRACES_EXPORTER": "zipkin"}, "none"),
    ],
)
def test_exporter_precedence_conf_then_env_then_default(
    load_conf: Loader, conf_value: str | None, environ: dict[str, str],
    expected: str,
) -> None:
    """zaqar.conf beats OTEL_TRACES_EXPORTER / _PROTOCOL, which beat otlp_http."""
    text = otel(exporter=conf_value) if conf_value else ON
    assert load_conf(text, environ).exporter == expected


def test_unsupported_env_exporter_names_the_option(load_conf: Loader) -> None:
    """OTEL_TRACES_EXPORTER=zipkin fails and says which option to set."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] exporter"):
        load_conf(ON, {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_unknown_conf_exporter_is_a_config_error(load_conf: Loader) -> None:
    """A typo in [opentelemetry] exporter is reported against that option."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] exporter"):
        load_conf(otel(exporter="jaeger"))


def test_empty_env_exporter_counts_as_unset(load_conf: Loader) -> None:
    """OTel spec: an empty variable is interpreted as if it were unset."""
    assert load_conf(ON, {"OTEL_TRACES_EXPORTER": ""}).exporter == "otlp_http"


# -- service name -------------------------------------------------------------


def test_service_name_from_conf_wins_over_env(load_conf: Loader) -> None:
    """[opentelemetry] service_name beats OTEL_SERVICE_NAME."""
    s = load_conf(otel(service_name="zaqar-eu"), {"OTEL_SERVICE_NAME": "other"})
    assert s.service_name == "zaqar-eu"


def test_service_name_unset_is_none(load_conf: Loader) -> None:
    """Unset: None, so OTEL_SERVICE_NAME (or 'zaqar') applies at setup."""
    assert load_conf(ON, {"OTEL_SERVICE_NAME": "other"}).service_name is None


# -- exporter arguments -------------------------------------------------------


@pytest.mark.parametrize(
    ("exporter", "endpoint", "expected"),
    [
        ("otlp_http", "http://collector:4318", "http://collector:4318/v1/traces"),
        ("otlp_http", "https://collector:4318/", "https://collector:4318/v1/traces"),
        ("otlp_http", "http://collector:4318/custom/traces",
         "http://collector:4318/custom/traces"),
        ("otlp_grpc", "http://collector:4317", "http://collector:4317"),
    ],
)
def test_endpoint_gets_signal_path_for_http_base_urls(
    load_conf: Loader, exporter: str, endpoint: str, expected: str
) -> None:
    """/v1/traces is added to an otlp_http base URL, never to gRPC or a path."""
    s = load_conf(otel(exporter=exporter, endpoint=endpoint))
    assert s.exporter_args["endpoint"] == expected


def test_endpoint_path_follows_exporter_chosen_by_env(load_conf: Loader) -> None:
    """An exporter picked through OTEL_EXPORTER_OTLP_PROTOCOL=grpc counts too."""
    s = load_conf(otel(endpoint="http://collector:4317"),
                  {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert s.exporter == "otlp_grpc"
    assert s.exporter_args["endpoint"] == "http://collector:4317"


@pytest.mark.parametrize("endpoint", ["http://:4318", "http://", "http:///v1/traces"])
def test_endpoint_without_host_is_refused(load_conf: Loader, endpoint: str) -> None:
    """An endpoint with no host fails at start-up, naming the option."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] endpoint"):
        load_conf(otel(endpoint=endpoint))


def test_endpoint_with_other_scheme_is_refused(load_conf: Loader) -> None:
    """Only http and https collectors."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] endpoint"):
        load_conf(otel(endpoint="ftp://collector"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a=1,b=2", {"a": "1", "b": "2"}),
        (" a = 1 , b=2 ", {"a": "1", "b": "2"}),
        ("authorization=Bearer x=y", {"authorization": "Bearer x=y"}),
        ("empty=", {"empty": ""}),
    ],
)
def test_headers_are_parsed(
    load_conf: Loader, value: str, expected: dict[str, str]
) -> None:
    """key=value pairs separated by commas, values may hold '='."""
    assert load_conf(otel(headers=value)).exporter_args["headers"] == expected


@pytest.mark.parametrize("value", ["a=1,b", "=1", "a=1,,b=2", "novalue"])
def test_malformed_headers_are_refused(load_conf: Loader, value: str) -> None:
    """A malformed headers option fails, naming it."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] headers"):
        load_conf(otel(headers=value))


def test_malformed_headers_error_does_not_echo_the_secret(load_conf: Loader) -> None:
    """The error message never repeats a header value (API keys live there)."""
    with pytest.raises(ConfigError) as info:
        load_conf(otel(headers="api-key=T0PS3CRET,broken"))
    assert "T0PS3CRET" not in str(info.value)


def test_certificate_must_exist(load_conf: Loader, tmp_path: Path) -> None:
    """A CA bundle path that is not a file fails at start-up."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] certificate"):
        load_conf(otel(certificate=tmp_path / "missing.pem"))


def test_certificate_file_is_passed_on(load_conf: Loader, tmp_path: Path) -> None:
    """An existing CA bundle becomes the exporter's certificate_file."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_conf(otel(certificate=pem))
    assert s.exporter_args["certificate_file"] == str(pem)


def test_deflate_with_grpc_is_refused(load_conf: Loader) -> None:
    """deflate is OTLP/HTTP only: with otlp_grpc the option is named."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] compression"):
        load_conf(otel(exporter="otlp_grpc", compression="deflate"))


@pytest.mark.parametrize(
    ("exporter", "compression"),
    [("otlp_http", "deflate"), ("otlp_http", "gzip"), ("otlp_grpc", "gzip")],
)
def test_supported_compression_is_passed_on(
    load_conf: Loader, exporter: str, compression: str
) -> None:
    """Compressions the chosen exporter supports reach it."""
    s = load_conf(otel(exporter=exporter, compression=compression))
    assert s.exporter_args["compression"] == compression


def test_timeout_and_insecure(load_conf: Loader) -> None:
    """timeout is a float; insecure is passed to the gRPC exporter only."""
    grpc = load_conf(otel(exporter="otlp_grpc", timeout=2.5, insecure="true"))
    assert grpc.exporter_args == {"timeout": 2.5, "insecure": True}
    http = load_conf(otel(exporter="otlp_http", insecure="true"))
    assert "insecure" not in http.exporter_args


def test_no_exporter_args_unless_set(load_conf: Loader) -> None:
    """Unset options are left out, so the SDK applies OTEL_EXPORTER_OTLP_*."""
    s = load_conf(ON, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"})
    assert s.exporter_args == {}


# -- batch processor ----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {}),
        ({"max_queue_size": 100}, {"max_queue_size": 100}),
        ({"schedule_delay": 250}, {"schedule_delay_millis": 250}),
        ({"max_queue_size": 4096, "max_export_batch_size": 64,
          "schedule_delay": 1000},
         {"max_queue_size": 4096, "max_export_batch_size": 64,
          "schedule_delay_millis": 1000}),
    ],
)
def test_batch_args_only_for_options_set(
    load_conf: Loader, options: dict[str, int], expected: dict[str, int]
) -> None:
    """BatchSpanProcessor gets only what zaqar.conf sets (OTEL_BSP_* otherwise)."""
    assert load_conf(otel(**options)).batch_args == expected


def test_batch_size_zero_is_refused(load_conf: Loader) -> None:
    """A queue of 0 spans would drop everything: refused, option named."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] max_queue_size"):
        load_conf(otel(max_queue_size=0))


# -- hmac keys ----------------------------------------------------------------


def test_stock_key_is_refused(load_conf: Loader) -> None:
    """osprofiler's default SECRET_KEY lets anyone trace: refused, with the fix."""
    with pytest.raises(ConfigError) as info:
        load_conf("[profiler]\nenabled = true\n")
    message = str(info.value)
    assert "[profiler] hmac_keys" in message
    assert "allow_stock_hmac_key" in message


def test_stock_key_among_others_is_refused(load_conf: Loader) -> None:
    """Listing SECRET_KEY next to a real key still opens the door."""
    with pytest.raises(ConfigError, match="allow_stock_hmac_key"):
        load_conf("[profiler]\nenabled = true\nhmac_keys = mine,SECRET_KEY\n")


def test_stock_key_accepted_when_allowed(load_conf: Loader) -> None:
    """allow_stock_hmac_key = true: the operator has chosen, tracing is on."""
    s = load_conf("[profiler]\nenabled = true\n"
                  "[opentelemetry]\nallow_stock_hmac_key = true\n")
    assert s.enabled
    assert s.hmac_keys == ("SECRET_KEY",)


@pytest.mark.parametrize("value", ["", " , ,"])
def test_empty_hmac_keys_are_refused(load_conf: Loader, value: str) -> None:
    """No key: no client could sign, so start-up says so."""
    with pytest.raises(ConfigError, match=r"\[profiler\] hmac_keys"):
        load_conf(f"[profiler]\nenabled = true\nhmac_keys = {value}\n")


def test_several_keys_kept_in_order(load_conf: Loader) -> None:
    """Rotation: keys are split on commas and kept in order (first signs)."""
    s = load_conf("[profiler]\nenabled = true\nhmac_keys = new, old ,older\n")
    assert s.hmac_keys == ("new", "old", "older")


def test_hmac_keys_not_in_error_messages(load_conf: Loader) -> None:
    """A refused config never echoes a configured key."""
    with pytest.raises(ConfigError) as info:
        load_conf("[profiler]\nenabled = true\nhmac_keys = pr1vate,SECRET_KEY\n")
    assert "pr1vate" not in str(info.value)


# -- sampling -----------------------------------------------------------------


def test_sampling_options(load_conf: Loader) -> None:
    """sample_ratio and honor_w3c_sampled reach the settings."""
    s = load_conf(otel(sample_ratio=0.25, honor_w3c_sampled="true"))
    assert s.sample_ratio == 0.25
    assert s.honor_w3c_sampled is True


@pytest.mark.parametrize("ratio", ["-0.1", "1.5", "half"])
def test_sample_ratio_out_of_range_is_a_config_error(
    load_conf: Loader, ratio: str
) -> None:
    """oslo validates on access: the error is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] sample_ratio"):
        load_conf(otel(sample_ratio=ratio))


def test_set_override_values_are_used(tmp_path: Path) -> None:
    """Values set programmatically (as tests and tools do) count like files."""
    conf = parsed_conf(tmp_path / "zaqar.conf", "")
    opts.register_opts(conf)
    conf.set_override("enabled", True, group="profiler")
    conf.set_override("hmac_keys", "k", group="profiler")
    conf.set_override("exporter", "console", group="opentelemetry")
    conf.set_override("sample_ratio", 1.0, group="opentelemetry")
    s = load(conf, {})
    assert (s.enabled, s.exporter, s.sample_ratio) == (True, "console", 1.0)


# -- opts ---------------------------------------------------------------------


def test_list_opts_has_both_groups_with_help() -> None:
    """oslo-config-generator gets [profiler] and [opentelemetry], all documented."""
    groups = dict(opts.list_opts())
    assert set(groups) == {"profiler", "opentelemetry"}
    for group, options in groups.items():
        assert options, group
        for opt in options:
            assert opt.help and opt.help.strip(), f"[{group}] {opt.name}"


def test_our_profiler_options_do_not_clash_with_zaqar_or_osprofiler() -> None:
    """Registering all three sets of [profiler] options in one conf works."""
    conf = cfg.ConfigOpts()
    profiler_opts.set_defaults(conf)
    conf.register_opts(zaqar_profiler.ALL_OPTS, group=zaqar_profiler.GROUP_NAME)
    opts.register_opts(conf)
    opts.register_opts(conf)  # idempotent, as load() registers again
    conf([], default_config_files=[])
    assert conf.profiler.trace_redis is False
    assert conf.opentelemetry.sample_ratio == 0.0


def test_oslo_config_entry_point_resolves_to_list_opts() -> None:
    """oslo-config-generator --namespace zaqar_otel finds list_opts."""
    found = entry_points(group="oslo.config.opts").select(name="zaqar_otel")
    assert [ep.value for ep in found] == ["zaqar_otel.opts:list_opts"]
    assert next(iter(found)).load() is opts.list_opts


# -- metrics ------------------------------------------------------------------


def test_metrics_are_off_unless_asked(load_conf: Loader) -> None:
    """Off by default: the endpoint may take traces only (Jaeger's does)."""
    s = load_conf(ON)
    assert s.metrics is None and not s.metrics_problem
    assert "[opentelemetry] metrics is unset" in s.metrics_off_because
    off = load_conf(otel(metrics="false"), {"OTEL_METRICS_EXPORTER": "otlp"})
    assert off.metrics is None and off.metrics_off_because.endswith("metrics = false")
    assert load_conf(ON, {"OTEL_METRICS_EXPORTER": "none"}).metrics is None


def test_metrics_on_by_option_or_by_otel_metrics_exporter(load_conf: Loader) -> None:
    on = load_conf(otel(metrics="true"))
    assert on.metrics == MetricsSettings()
    grpc = load_conf(ON, {"OTEL_METRICS_EXPORTER": "otlp",
                          "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"})
    assert grpc.metrics is not None and grpc.metrics.exporter == "otlp_grpc"
    assert grpc.exporter == "otlp_http"  # traces follow their own variables
    console = load_conf(ON, {"OTEL_METRICS_EXPORTER": "console"})
    assert console.metrics is not None and console.metrics.exporter == "console"
    # The [opentelemetry] exporter option serves both signals.
    both = load_conf(otel(metrics="true", exporter="otlp_grpc"),
                     {"OTEL_METRICS_EXPORTER": "console"})
    assert both.metrics is not None and both.metrics.exporter == "otlp_grpc"


def test_an_unsupported_metrics_exporter_leaves_tracing_on(load_conf: Loader) -> None:
    s = load_conf(otel(metrics="true"), {"OTEL_METRICS_EXPORTER": "prometheus"})
    assert s.enabled and s.metrics is None and s.metrics_problem
    assert "OTEL_METRICS_EXPORTER='prometheus'" in s.metrics_off_because
    bad = load_conf(otel(metrics="true"), {"OTEL_METRICS_EXEMPLAR_FILTER": "some"})
    assert bad.enabled and bad.metrics is None and bad.metrics_problem


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("http://collector:4318", "http://collector:4318/v1/metrics"),
     ("http://collector:4318/", "http://collector:4318/v1/metrics"),
     ("http://collector:4318/v1/traces", "http://collector:4318/v1/metrics"),
     ("https://gw.example/otlp", "https://gw.example/otlp/v1/metrics"),
     ("https://gw.example/otlp/v1/traces", "https://gw.example/otlp/v1/metrics")],
)
def test_metrics_endpoint_is_beside_the_traces_one(
        load_conf: Loader, endpoint: str, expected: str) -> None:
    s = load_conf(otel(metrics="true", endpoint=endpoint))
    assert s.metrics is not None and s.metrics.exporter_args["endpoint"] == expected
    found = metrics_endpoint(s)
    assert found is not None and (found.url, found.source) == (
        expected, "[opentelemetry] endpoint")


def test_metrics_endpoint_from_the_variables(load_conf: Loader) -> None:
    s = load_conf(otel(metrics="true"))
    assert metrics_endpoint(s, {}) == Endpoint(
        "http://localhost:4318/v1/metrics", "default")
    assert metrics_endpoint(s, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == \
        Endpoint("http://c:4318/v1/metrics", "OTEL_EXPORTER_OTLP_ENDPOINT")
    exact = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/x"}
    assert metrics_endpoint(s, exact) == Endpoint(
        "http://m:9/x", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    assert metrics_endpoint(load_conf(ON)) is None


def test_metrics_options(load_conf: Loader) -> None:
    s = load_conf(otel(metrics="true", metrics_export_interval=1500,
                       metrics_per_queue="false", metrics_max_queues=7,
                       metrics_per_project="true"),
                  {"OTEL_METRIC_EXPORT_INTERVAL": "999",
                   "OTEL_METRICS_EXEMPLAR_FILTER": "always_off"})
    assert s.metrics == MetricsSettings(
        export_interval_millis=1500, per_queue=False, max_queues=7,
        per_project=True, exemplar_filter="always_off")
    env = load_conf(otel(metrics="true"), {"OTEL_METRIC_EXPORT_INTERVAL": "2500"})
    assert env.metrics is not None and env.metrics.export_interval_millis == 2500


# -- OTEL_* numbers the SDK reads (issue 24, item 7) ---------------------------


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf", " "])
def test_a_bad_export_timeout_is_one_problem_and_the_default(
        load_conf: Loader, value: str) -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT=0 made the SDK's exporters give up at
    once: the exporter is handed the default instead, and a bad value is one
    line naming the variable (an empty one counts as unset)."""
    s = load_conf(ON, {"OTEL_EXPORTER_OTLP_TIMEOUT": value,
                       "OTEL_METRICS_EXPORTER": "otlp"})
    assert s.exporter_args["timeout"] == 10.0
    assert s.metrics is not None and s.metrics.exporter_args["timeout"] == 10.0
    if value.strip():
        assert len(s.problems) == 1
        assert s.problems[0].startswith(f"OTEL_EXPORTER_OTLP_TIMEOUT={value!r}")
        assert "default 10" in s.problems[0]
    else:
        assert s.problems == ()


def test_good_otel_numbers_are_left_to_the_sdk(load_conf: Loader) -> None:
    s = load_conf(ON, {"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
                       "OTEL_BSP_MAX_QUEUE_SIZE": "100"})
    assert "timeout" not in s.exporter_args and s.batch_args == {}
    assert s.problems == ()


@pytest.mark.parametrize("variable", [n.variable for n in SDK_NUMBERS])
def test_every_sdk_number_is_checked(load_conf: Loader, variable: str) -> None:
    s = load_conf(ON, {variable: "-7x", "OTEL_METRICS_EXPORTER": "otlp"})
    assert [p.split("=")[0] for p in s.problems] == [variable]
    assert s.metrics is not None  # metrics stay on, with the default


def test_span_limits_are_all_given_with_a_length_limit_by_default(
        load_conf: Loader) -> None:
    limits = load_conf(ON).span_limits
    assert limits["max_attribute_length"] == limits["max_span_attribute_length"] == 8192
    assert limits["max_span_attributes"] == 128
    env = {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100",
           "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "unset",
           "OTEL_ATTRIBUTE_COUNT_LIMIT": "7", "OTEL_SPAN_EVENT_COUNT_LIMIT": "-1"}
    s = load_conf(ON, env)
    assert s.span_limits["max_attribute_length"] == 100
    assert s.span_limits["max_span_attribute_length"] == -1  # SpanLimits.UNSET
    assert s.span_limits["max_span_attributes"] == 7
    assert s.span_limits["max_events"] == 128
    assert len(s.problems) == 1 and "OTEL_SPAN_EVENT_COUNT_LIMIT" in s.problems[0]
    option = load_conf(otel(attribute_value_length_limit=50), env).span_limits
    assert option["max_attribute_length"] == option["max_span_attribute_length"] == 50


def test_a_service_name_that_is_not_utf8_is_made_one(load_conf: Loader) -> None:
    s = load_conf(ON, {"OTEL_SERVICE_NAME": "zaqar-eu\udcff"})
    assert s.service_name == "zaqar-eu\ufffd"
    assert len(s.problems) == 1 and "OTEL_SERVICE_NAME" in s.problems[0]
    assert load_conf(ON, {"OTEL_SERVICE_NAME": "zaqar-eu"}).service_name is None


# -- fast_path ----------------------------------------------------------------


def test_fast_path_is_auto_unless_the_option_or_its_variable_says_off(
        load_conf: Loader) -> None:
    loaded = load_conf(otel())
    assert (loaded.fast_path, loaded.fast_path_source) == ("auto", "default")
    loaded = load_conf(otel(), {"OTEL_ZAQAR_FAST_PATH": "OFF "})
    assert (loaded.fast_path, loaded.fast_path_source) == (
        "off", "OTEL_ZAQAR_FAST_PATH")
    # The option wins over the variable, as every option does.
    loaded = load_conf(otel(fast_path="auto"), {"OTEL_ZAQAR_FAST_PATH": "off"})
    assert (loaded.fast_path, loaded.fast_path_source) == (
        "auto", "[opentelemetry] fast_path")
    loaded = load_conf(otel(fast_path="off"))
    assert (loaded.fast_path, loaded.fast_path_source) == (
        "off", "[opentelemetry] fast_path")


def test_a_fast_path_variable_that_is_neither_is_a_problem_and_auto_is_used(
        load_conf: Loader) -> None:
    loaded = load_conf(otel(), {"OTEL_ZAQAR_FAST_PATH": "fast"})
    assert loaded.fast_path == "auto"
    assert loaded.problems == (
        "OTEL_ZAQAR_FAST_PATH='fast' is not one of auto, off; auto is used",)


def test_a_fast_path_option_that_is_neither_names_the_option(
        load_conf: Loader) -> None:
    with pytest.raises(ConfigError, match=r"\[opentelemetry\] fast_path"):
        load_conf(otel(fast_path="on"))
