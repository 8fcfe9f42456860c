"""Backends: spans for the stores behind Zaqar's controllers.

* ``instrumentors``: the redis, pymongo, sqlalchemy and requests
  instrumentors and zaqar-otel's own patches, each behind its switch;
* ``sql``: SQL spans named by operation and table;
* ``pooling``: a span per pool catalog lookup.
"""
