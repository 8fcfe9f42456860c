"""Bounded attributes: queue names and project ids are chosen by tenants.

Every distinct attribute value makes series in the backend (Prometheus
keeps each one in memory), so a tenant creating queues in a loop must not be
able to grow them without end. ``Destinations`` decides what a messaging
measurement is attributed to:

* ``per_queue`` off: no queue attribute, one series per operation;
* otherwise the first ``max_queues`` distinct queues (or project and queue
  pairs, with ``per_project``) seen by this process get series of their own
  and keep them; every later one is attributed to ``_other`` (queue and
  project), and one warning says so the first time. Nothing is evicted:
  series that come and go would reset their counters in the backend.

The semantic conventions ask for ``messaging.destination.name`` "if and only
if it is known to have low cardinality": the cap is what makes it so::

    destinations = Destinations(per_queue=True, per_project=False, max_queues=100)
    destinations.of("orders", "project-a")   # ('orders', None)
"""

from __future__ import annotations

import logging
import threading

LOG = logging.getLogger(__name__)

OTHER = "_other"

#: (queue or None, project or None): what a measurement is attributed to.
Destination = tuple[str | None, str | None]


class Destinations:
    """The bounded set of destinations measurements are attributed to."""

    def __init__(self, per_queue: bool = True, per_project: bool = False,
                 max_queues: int = 100) -> None:
        self.per_queue = per_queue
        self.per_project = per_project
        self.max_queues = max_queues
        self._admitted: set[Destination] = set()
        self._lock = threading.Lock()
        self._overflowed = False
        self._other: Destination = (OTHER if per_queue else None,
                                    OTHER if per_project else None)

    def of(self, queue: str | None, project: str | None) -> Destination:
        """What a measurement on ``queue`` of ``project`` is attributed to."""
        key = (queue if self.per_queue else None,
               project if self.per_project else None)
        if key in self._admitted or key == (None, None):
            return key
        return self._admit(key)

    def _admit(self, key: Destination) -> Destination:
        with self._lock:
            if key in self._admitted:
                return key
            if len(self._admitted) < self.max_queues:
                self._admitted.add(key)
                return key
            first, self._overflowed = not self._overflowed, True
        if first:
            LOG.warning(
                "zaqar-otel: more than %d queues measured in this process "
                "([opentelemetry] metrics_max_queues); the messages of any "
                "further queue are counted under the queue name %r",
                self.max_queues, OTHER)
        return self._other

    def reset(self) -> None:
        """Forget what was admitted: a forked worker starts afresh (with a
        new lock: the parent's may have been held at the fork)."""
        self._lock = threading.Lock()
        self._admitted = set()
        self._overflowed = False

    def __len__(self) -> int:
        return len(self._admitted)
