"""Old home of ``OSProfilerPropagator``: the ``osprofiler`` propagator entry
point of installs made before 0.2 names ``zaqar_otel.bridge``. Use
``zaqar_otel.OSProfilerPropagator``."""

from zaqar_otel.propagation.propagator import OSProfilerPropagator

__all__ = ["OSProfilerPropagator"]
