"""Messaging: what happens to messages inside a traced request.

* ``operations``: the ``messaging.*`` spans of sends, receives, claims and
  settles, with the semantic conventions' attributes;
* ``links``: producer -> consumer span links kept beside the messages in the
  message store;
* ``deliveries``: webhook and e-mail notifications as CLIENT spans.
"""
