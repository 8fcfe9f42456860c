"""Export: from an ended span to the collector.

* ``processor``: the batch span processor that counts what it drops;
* ``otlp_encoding``: a faster byte-for-byte equal OTLP protobuf encoder;
* ``otlp_http`` / ``otlp_grpc``: the SDK's exporters with that encoder;
* ``resource``: the Resource of every span the process exports.
"""
