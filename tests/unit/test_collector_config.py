"""The collector deployment: config/otel-collector.yaml and collector/compose.yaml.

Both files are parsed as the collector and docker compose would read them
(YAML), and checked against each other, against the collector README and the
configuration docs, and against the ports zaqar-otel and the OTel SDK export
to by default. No container is started.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "otel-collector.yaml"
COMPOSE = ROOT / "collector" / "compose.yaml"
PROMETHEUS = ROOT / "collector" / "prometheus.yml"
COLLECTOR_README = ROOT / "collector" / "README.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"

SECTIONS = {"receivers", "processors", "exporters", "extensions"}
# Component types of the contrib distribution that this deployment uses; a
# misspelt type makes the collector refuse to start.
KNOWN_TYPES = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "tail_sampling", "batch"},
    "exporters": {"otlp", "otlp_grpc", "otlp_http", "otlphttp", "debug",
                  "loadbalancing", "prometheus"},
    "extensions": {"health_check", "zpages", "pprof"},
}


ENV_WITH_DEFAULT = re.compile(r"\$\{env:([A-Z0-9_]+):-([^}]*)\}")


def as_compose_reads_it(text: str) -> str:
    """``${env:NAME:-default}`` -> default: what the collector substitutes
    where NAME is unset, as under compose (the tests set the addresses)."""
    resolved = ENV_WITH_DEFAULT.sub(lambda m: m.group(2), text)
    assert "${" not in resolved, "an ${...} without a default"
    return resolved


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded = yaml.safe_load(as_compose_reads_it(CONFIG.read_text()))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def component_type(component_id: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc``: ids are ``type[/name]``."""
    return component_id.split("/", 1)[0]


def host_port(endpoint: str) -> tuple[str, int]:
    """``0.0.0.0:4317`` or ``http://jaeger:4317`` -> (host, port)."""
    if "://" not in endpoint:
        endpoint = "//" + endpoint
    parts = urlsplit(endpoint)
    assert parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def receiver_ports(config: dict[str, Any]) -> dict[str, int]:
    protocols = config["receivers"]["otlp"]["protocols"]
    return {name: host_port(proto["endpoint"])[1]
            for name, proto in protocols.items()}


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    found = config["service"]["pipelines"]
    assert found, "no pipeline"
    return found


# -- the collector configuration ------------------------------------------------


def test_config_has_the_top_level_sections(config: dict[str, Any]) -> None:
    assert SECTIONS | {"service"} <= set(config)
    assert "traces" in pipelines(config)


@pytest.mark.parametrize("section", ["receivers", "processors", "exporters"])
def test_pipeline_components_are_defined(
    config: dict[str, Any], section: str
) -> None:
    defined = config[section] or {}
    for name, pipeline in pipelines(config).items():
        used = pipeline.get(section) or []
        if section != "processors":
            assert used, f"pipeline {name} has no {section}"
        for component_id in used:
            assert component_id in defined, (
                f"pipeline {name} uses {section[:-1]} {component_id!r}, "
                f"which is not defined under {section}")
            assert component_type(component_id) in KNOWN_TYPES[section], (
                component_id)


def test_service_extensions_are_defined(config: dict[str, Any]) -> None:
    enabled = config["service"].get("extensions") or []
    assert "health_check" in enabled
    for component_id in enabled:
        assert component_id in (config["extensions"] or {}), component_id
        assert component_type(component_id) in KNOWN_TYPES["extensions"]


def test_memory_limiter_is_first_in_every_pipeline(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        processors = pipeline.get("processors") or []
        assert processors, f"pipeline {name} has no processors"
        assert component_type(processors[0]) == "memory_limiter", name


def test_memory_limiter_is_configured(config: dict[str, Any]) -> None:
    limiter = config["processors"]["memory_limiter"]
    # Without check_interval the limiter never checks anything.
    assert limiter["check_interval"]
    if "limit_percentage" in limiter:
        spike, limit = limiter["spike_limit_percentage"], limiter["limit_percentage"]
        assert 0 < spike < limit <= 100
    else:
        assert 0 < limiter["spike_limit_mib"] < limiter["limit_mib"]


def test_batch_comes_after_tail_sampling(config: dict[str, Any]) -> None:
    traces = [component_type(p) for p in pipelines(config)["traces"]["processors"]]
    assert "tail_sampling" in traces
    assert "batch" in traces
    assert traces.index("batch") > traces.index("tail_sampling")


def _duration_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(value))
    assert match, f"unsupported duration {value!r}"
    number, unit = float(match[1]), match[2]
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


@pytest.fixture(scope="module")
def tail_sampling(config: dict[str, Any]) -> dict[str, Any]:
    return config["processors"]["tail_sampling"]


def _policies(tail_sampling: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p for p in tail_sampling["policies"] if p["type"] == kind]


def test_policy_names_are_unique(tail_sampling: dict[str, Any]) -> None:
    names = [p["name"] for p in tail_sampling["policies"]]
    assert len(names) == len(set(names))


def test_every_error_trace_is_kept(tail_sampling: dict[str, Any]) -> None:
    codes = [p["status_code"]["status_codes"]
             for p in _policies(tail_sampling, "status_code")]
    assert any("ERROR" in c for c in codes), "no status_code policy keeps ERROR"


def test_every_slow_trace_is_kept(tail_sampling: dict[str, Any]) -> None:
    thresholds = [p["latency"]["threshold_ms"]
                  for p in _policies(tail_sampling, "latency")]
    assert thresholds, "no latency policy"
    assert all(t > 0 for t in thresholds)


def test_a_share_of_the_rest_is_kept(tail_sampling: dict[str, Any]) -> None:
    shares = [p["probabilistic"]["sampling_percentage"]
              for p in _policies(tail_sampling, "probabilistic")]
    assert shares, "no probabilistic policy"
    assert all(0 < s < 100 for s in shares), shares


def test_decision_waits_for_the_exporters_flush(
    tail_sampling: dict[str, Any],
) -> None:
    """Spans of one request arrive in batches up to schedule_delay apart."""
    from zaqar_otel.opts import otel_opts

    help_text = next(o.help for o in otel_opts if o.name == "schedule_delay")
    match = re.search(r"else (\d+)", help_text)
    assert match, help_text
    flush_delay = int(match[1]) / 1000
    wait = _duration_seconds(tail_sampling["decision_wait"])
    assert wait > flush_delay
    # num_traces below rate x wait drops traces before they are decided.
    expected = tail_sampling["expected_new_traces_per_sec"]
    assert tail_sampling["num_traces"] >= 2 * expected * wait


def test_otlp_receiver_ports(config: dict[str, Any]) -> None:
    assert receiver_ports(config) == {"grpc": 4317, "http": 4318}
    for proto in config["receivers"]["otlp"]["protocols"].values():
        # In a container, localhost would not be reachable through the
        # published ports.
        assert host_port(proto["endpoint"])[0] == "0.0.0.0"


def test_receiver_ports_are_zaqar_otels_defaults(config: dict[str, Any]) -> None:
    from zaqar_otel.opts import EXPORTER_CHOICES, otel_opts

    helps = {o.name: o.help for o in otel_opts}
    assert "4318" in helps["endpoint"] and "4317" in helps["endpoint"]
    # "http://collector:4318 for otlp_http ... http://collector:4317 for otlp_grpc"
    in_endpoint_help = {name: int(port) for port, name in
                        re.findall(r":(\d+) for (otlp_\w+)", helps["endpoint"])}
    # ("otlp_http", "OTLP/HTTP protobuf, port 4318")
    in_choices = {name: int(m[1]) for name, text in EXPORTER_CHOICES
                  if (m := re.search(r"port (\d+)", text))}
    ports = receiver_ports(config)
    expected = {"otlp_http": ports["http"], "otlp_grpc": ports["grpc"]}
    assert in_endpoint_help == expected
    assert in_choices == expected


def test_receiver_ports_are_the_sdk_defaults(config: dict[str, Any]) -> None:
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_mod
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_mod

    ports = receiver_ports(config)
    assert f":{ports['http']}" in http_mod.DEFAULT_ENDPOINT
    # The gRPC exporter has no DEFAULT_ENDPOINT constant (1.45 hard-codes
    # "http://localhost:4317" in its constructor): checked only if one appears.
    grpc_default = getattr(grpc_mod, "DEFAULT_ENDPOINT", None)
    if grpc_default is not None:
        assert f":{ports['grpc']}" in grpc_default


def test_health_check_listens_on_all_interfaces(config: dict[str, Any]) -> None:
    assert host_port(config["extensions"]["health_check"]["endpoint"]) == (
        "0.0.0.0", 13133)


# -- the docs agree with the receiver ----------------------------------------------


def _ini_blocks(markdown: str) -> list[configparser.ConfigParser]:
    parsers = []
    for block in re.findall(r"```ini\n(.*?)```", markdown, re.DOTALL):
        parser = configparser.ConfigParser(inline_comment_prefixes=("#",),
                                           interpolation=None)
        parser.read_string(block)
        parsers.append(parser)
    return parsers


@pytest.mark.parametrize("doc", [COLLECTOR_README, CONFIGURATION_DOC],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_endpoints_use_the_receiver_ports(
    config: dict[str, Any], doc: Path
) -> None:
    ports = receiver_ports(config)
    by_exporter = {"otlp_http": ports["http"], "otlp_grpc": ports["grpc"]}
    text = doc.read_text()
    checked = 0
    for parser in _ini_blocks(text):
        otel = parser["opentelemetry"] if parser.has_section("opentelemetry") else {}
        if "endpoint" in otel:
            exporter = otel.get("exporter", "otlp_http")
            assert urlsplit(otel["endpoint"]).port == by_exporter[exporter], (
                f"{doc.name}: {exporter} endpoint {otel['endpoint']}")
            checked += 1
        profiler = parser["profiler"] if parser.has_section("profiler") else {}
        if profiler.get("connection_string", "").startswith("otlp://"):
            # osprofiler's OTLP driver exports over HTTP only.
            assert urlsplit(profiler["connection_string"]).port == ports["http"]
            checked += 1
    assert checked, f"{doc.name} shows no endpoint in an ini block"


# `endpoint = http://<collector-host>:4317`, `connection_string = otlp://c:4318`,
# `OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317`, `--otlp-endpoint URL`.
_ENDPOINT_MENTION = re.compile(
    r"(?:endpoint =|connection_string =|OTLP_(?:TRACES_)?ENDPOINT=|--otlp-endpoint)"
    r" ?(?:https?|otlp)://[^\s`\"']+?:(\d+)")


@pytest.mark.parametrize("doc", [ROOT / "README.md", COLLECTOR_README,
                                 CONFIGURATION_DOC],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_endpoint_mentions_use_the_receiver_ports(
    config: dict[str, Any], doc: Path
) -> None:
    ports = set(receiver_ports(config).values())
    mentioned = [int(p) for p in _ENDPOINT_MENTION.findall(doc.read_text())]
    assert set(mentioned) <= ports, f"{doc.name} mentions {mentioned}"
    if doc != ROOT / "README.md":  # the README may leave endpoints to the docs
        assert mentioned, f"{doc.name} mentions no OTLP endpoint"


def test_collector_readme_names_both_ports(config: dict[str, Any]) -> None:
    readme = COLLECTOR_README.read_text()
    for port in receiver_ports(config).values():
        assert f":{port}" in readme
    assert "connection_string = otlp://" in readme


# -- the compose file -----------------------------------------------------------------


def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from short or long port syntax."""
    published = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published[int(entry["target"])] = int(entry.get("published", 0))
            continue
        spec = str(entry).split("/")[0]  # drop /tcp
        parts = spec.rsplit(":", 2)
        container = int(parts[-1])
        published[container] = int(parts[-2]) if len(parts) > 1 else 0
    return published


def _depends_on(service: dict[str, Any]) -> set[str]:
    found = service.get("depends_on") or []
    return set(found)  # a list of names, or a mapping keyed by name


def _collector(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["otel-collector"]


def _config_flag(service: dict[str, Any]) -> str:
    command = service["command"]
    args = command.split() if isinstance(command, str) else command
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config":
            return args[i + 1]
    raise AssertionError(f"no --config in {command!r}")


def test_compose_parses_with_both_services(compose: dict[str, Any]) -> None:
    assert {"jaeger", "otel-collector"} <= set(compose["services"])


def test_collector_image_is_contrib(compose: dict[str, Any]) -> None:
    # tail_sampling exists only in the contrib distribution.
    image = _collector(compose)["image"]
    assert image.split(":")[0] == "otel/opentelemetry-collector-contrib"


def test_collector_mounts_this_config_where_it_reads_it(
    compose: dict[str, Any],
) -> None:
    collector = _collector(compose)
    target = _config_flag(collector)
    mounts = {}
    for volume in collector["volumes"]:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, mounted_at = str(volume).split(":")[:2]
            mounts[mounted_at] = source
    assert target in mounts, f"--config={target} is not a mounted file"
    source = (COMPOSE.parent / mounts[target]).resolve()
    assert source.is_file(), source
    assert source == CONFIG.resolve()


def test_collector_publishes_the_receiver_ports(
    compose: dict[str, Any], config: dict[str, Any]
) -> None:
    published = _published(_collector(compose))
    for port in receiver_ports(config).values():
        assert published.get(port) == port, f"{port} not published as {port}"
    health = host_port(config["extensions"]["health_check"]["endpoint"])[1]
    assert published.get(health) == health


def test_jaeger_publishes_the_ui_only(compose: dict[str, Any]) -> None:
    published = _published(compose["services"]["jaeger"])
    assert published.get(16686) == 16686
    # 4317/4318 on the host belong to the collector.
    assert not {4317, 4318} & set(published)
    assert not {4317, 4318} & set(published.values())


def test_exporter_reaches_jaeger_in_the_compose_network(
    compose: dict[str, Any], config: dict[str, Any]
) -> None:
    exporters = pipelines(config)["traces"]["exporters"]
    [jaeger_exporter] = [e for e in exporters if e.endswith("/jaeger")]
    assert component_type(jaeger_exporter) in {"otlp", "otlp_grpc"}
    settings = config["exporters"][jaeger_exporter]
    host, port = host_port(settings["endpoint"])
    assert (host, port) == ("jaeger", 4317)
    services = compose["services"]
    assert host in services, f"{host} is not a compose service"
    assert services[host]["image"].split(":")[0].endswith("jaegertracing/jaeger")
    assert host in _depends_on(_collector(compose))
    # Plain gRPC inside the compose network: Jaeger there has no certificate.
    assert settings["tls"]["insecure"] is True


@pytest.mark.parametrize("service", ["jaeger", "otel-collector"])
def test_images_are_pinned(compose: dict[str, Any], service: str) -> None:
    image = compose["services"][service]["image"]
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image} has no tag"
    assert tag != "latest"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{image}: not a version tag"


# -- the images are the releases built and tested here -------------------------------

BUILDER_CONFIG = ROOT / "collector" / "builder-config.yaml"
JAEGER_GO_MOD = ROOT / "collector" / "jaeger" / "go.mod"
COMPOSE_FILES = sorted((ROOT / "collector").glob("compose*.yaml"))
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib/"


def _images(name: str) -> list[tuple[str, str]]:
    """(compose file, tag) of every service running image ``name``."""
    found = []
    for path in COMPOSE_FILES:
        services = yaml.safe_load(path.read_text()).get("services") or {}
        for service in services.values():
            image, _, tag = str(service.get("image", "")).rpartition(":")
            if image == name:
                found.append((path.name, tag))
    return found


def test_collector_images_are_the_release_built_here() -> None:
    """otel/opentelemetry-collector-contrib in the compose files is the
    release of the contrib modules otelcol-zaqar is built from (`make
    collector`), which the tests ran the shipped configuration with."""
    manifest = yaml.safe_load(BUILDER_CONFIG.read_text())
    modules = [entry["gomod"] for section in manifest.values()
               if isinstance(section, list) for entry in section
               if isinstance(entry, dict) and "gomod" in entry]
    contrib = {gomod.split()[1] for gomod in modules if gomod.startswith(CONTRIB)}
    [release] = contrib  # one release for every contrib module
    images = _images("otel/opentelemetry-collector-contrib")
    assert len(images) >= 3  # compose.yaml's, and the gateway and sampler
    assert {tag for _, tag in images} == {release.removeprefix("v")}, images


def test_jaeger_images_are_the_release_built_here() -> None:
    """jaegertracing/jaeger in the compose files is the Jaeger v2 release of
    the Go module `make jaeger` builds (collector/jaeger/go.mod). Jaeger tags
    each release twice, v1.N.P for the Go module and v2.(N-63).P for the v2
    binary and images: v1.63.0 / v2.0.0 first, v1.74.0 / v2.11.0 (its
    CHANGELOG.md), v1.75.0 / v2.12.0."""
    required = re.search(r"^\s*github\.com/jaegertracing/jaeger (v1\.(\d+)\.(\d+))\b",
                         JAEGER_GO_MOD.read_text(), re.M)
    assert required, "collector/jaeger/go.mod requires no jaegertracing/jaeger"
    minor, patch = int(required.group(2)), int(required.group(3))
    images = _images("jaegertracing/jaeger")
    assert len(images) >= 2  # compose.yaml's and compose-scale-out.yaml's
    assert {tag for _, tag in images} == {f"2.{minor - 63}.{patch}"}, (
        required.group(1), images)


# -- the metrics pipeline: zaqar-otel's metrics to Prometheus ----------------------


def test_metrics_pipeline_takes_otlp_to_the_prometheus_exporter(
    config: dict[str, Any],
) -> None:
    metrics = pipelines(config)["metrics"]
    assert metrics["receivers"] == ["otlp"]  # the ports zaqar-otel exports to
    assert [component_type(e) for e in metrics["exporters"]] == ["prometheus"]
    processors = [component_type(p) for p in metrics["processors"]]
    # Sampling is for traces: every metric point of every process counts.
    assert "tail_sampling" not in processors and "batch" in processors


def test_prometheus_exporter_serves_exemplars(config: dict[str, Any]) -> None:
    [exporter] = pipelines(config)["metrics"]["exporters"]
    settings = config["exporters"][exporter]
    # Exemplars (the trace id in a duration bucket) exist only in OpenMetrics.
    assert settings["enable_open_metrics"] is True
    host, _ = host_port(settings["endpoint"])
    assert host == "0.0.0.0"  # scraped from the compose network
    # Longer than zaqar-otel's export interval, or series blink out between
    # two exports.
    from zaqar_otel.settings import DEFAULT_METRIC_EXPORT_INTERVAL

    expiry = _duration_seconds(settings["metric_expiration"])
    assert expiry > 2 * DEFAULT_METRIC_EXPORT_INTERVAL / 1000


def test_prometheus_scrapes_the_collector_and_keeps_exemplars(
    compose: dict[str, Any], config: dict[str, Any]
) -> None:
    [exporter] = pipelines(config)["metrics"]["exporters"]
    port = host_port(config["exporters"][exporter]["endpoint"])[1]
    collector = _collector(compose)
    assert str(port) in [str(p) for p in collector.get("expose") or []]
    prometheus = compose["services"]["prometheus"]
    assert "otel-collector" in _depends_on(prometheus)
    args = prometheus["command"]
    assert "--enable-feature=exemplar-storage" in args
    flag = next(a for a in args if a.startswith("--config.file="))
    mounted = {str(v).split(":")[1]: str(v).split(":")[0]
               for v in prometheus["volumes"]}
    source = (COMPOSE.parent / mounted[flag.split("=", 1)[1]]).resolve()
    assert source == PROMETHEUS.resolve()
    assert _published(prometheus).get(9090) == 9090
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    [job] = scrape["scrape_configs"]
    # The job and instance labels the exporter sets (service.name,
    # service.instance.id) keep the workers' cumulative series apart.
    assert job["honor_labels"] is True
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"otel-collector:{port}"]
    interval = _duration_seconds(scrape["global"]["scrape_interval"])
    assert interval <= _duration_seconds(
        config["exporters"][exporter]["metric_expiration"])
