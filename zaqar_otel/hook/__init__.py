"""The start-up hook's internals, behind ``zaqar_otel.instrument``.

* ``state``: what set-up built (``Running``) and the process's one owner of
  it (``Hook``), handed down to every part that needs it;
* ``start``: ``install``, ``setup``, ``shutdown`` and ``teardown``, in order;
* ``sdk``: the SDK's objects (the TracerProvider, Zaqar's metrics) and their
  flush at exit;
* ``propagators``: the global propagator, from ``OTEL_PROPAGATORS``;
* ``osprofiler``: Zaqar's trace points as OTel spans;
* ``zaqar``: the functions of Zaqar's start-up the hook replaces.
"""
