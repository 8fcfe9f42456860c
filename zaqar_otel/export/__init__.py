"""Export: what every ended span goes through on its way to the collector,
whichever path made it (``zaqar_otel._sdk`` builds the processor and the
exporter):

* ``processor``: ``CountingExporter`` around the exporter (error texts
  scrubbed, requests bounded in bytes, drops counted by ``DropCounter``).
"""
