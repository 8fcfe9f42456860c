"""Zaqar's metrics, for every request, traced or not.

- :mod:`~zaqar_otel.metrics.recorder`: the instruments and the two calls the
  request path makes (``request`` from the WSGI entry, ``operation`` from
  the messaging middleware);
- :mod:`~zaqar_otel.metrics.instruments`: cheap histogram and counter
  aggregators that export as the SDK's points, exemplars included;
- :mod:`~zaqar_otel.metrics.cardinality`: queue and project attributes,
  bounded (``_other`` past ``metrics_max_queues``);
- :mod:`~zaqar_otel.metrics.pipeline`: the SDK exporter on a timer.

Set-up (``zaqar_otel.instrument``) builds one of each per process::

    metrics = start(settings.metrics, resource, conventions)  # + running pipeline
    metrics.recorder.request(...)
    metrics.pipeline.shutdown(5.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource

from zaqar_otel import _sdk, settings
from zaqar_otel._sdk import layout
from zaqar_otel.metrics.cardinality import Destinations
from zaqar_otel.metrics.pipeline import Pipeline
from zaqar_otel.metrics.recorder import Recorder


@dataclass(frozen=True)
class Metrics:
    """The recorder the request path feeds and the pipeline that exports it."""

    recorder: Recorder
    pipeline: Pipeline


def start(conf: settings.MetricsSettings, resource: Resource,
          conventions: layout.Conventions | None = None) -> Metrics:
    """Build the recorder and exporter ``conf`` describes; start exporting.
    ``conventions``: the HTTP names of the request duration (None: stable)."""
    recorder = Recorder(
        Destinations(conf.per_queue, conf.per_project, conf.max_queues),
        conf.exemplar_filter, conventions)
    pipeline = Pipeline(recorder, _sdk.metric_exporter(conf), resource,
                        conf.export_interval_millis)
    pipeline.start()
    return Metrics(recorder, pipeline)


__all__ = ["Destinations", "Metrics", "Pipeline", "Recorder", "start"]
