"""Request entry: where an API request becomes (or does not become) a trace.

* ``lifecycle``: ``Entry``, one per process, the same for both transports:
  the sampling decision, the SERVER span, OSProfiler's per-thread profiler;
* ``wsgi_middleware``: ``TracingMiddleware``, outermost around Zaqar's app;
* ``websocket``: the same entry for Zaqar's websocket transport.
"""
