"""``zaqar_otel.wsgi:application``: Zaqar's WSGI app with the hook applied.

For gunicorn, uwsgi or mod_wsgi, in place of ``zaqar.transport.wsgi.app``;
it reads the same configuration files (oslo.config's default paths, such as
``/etc/zaqar/zaqar.conf`` or ``~/.zaqar/zaqar.conf``)::

    gunicorn --workers 2 --threads 8 zaqar_otel.wsgi:application

Each worker imports this module itself, so each one sets up its own
exporter; with ``--preload`` the SDK's span processor restarts its export
thread in every forked worker.
"""

from zaqar_otel import instrument

instrument.install()

from zaqar.transport.wsgi.app import application  # noqa: E402 - after install()

app = application

__all__ = ["app", "application"]
