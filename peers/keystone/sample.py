"""``python -m peers.keystone.sample``: the commands of the Keystone peer
test, each one's stderr and trace tree (what SAMPLE.md shows), on the stack
of :mod:`harness.keystone_stack`."""

from __future__ import annotations

import os
import sys
import uuid

from harness.keystone_stack import COMMANDS, Stack, detail
from zaqar_otel.demo.tree import render_tree


def main() -> int:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    with Stack() as stack:
        print(f"stack up in {stack.timings['stack']:.1f}s "
              f"(Keystone {stack.timings['keystone']:.1f}s)\n")
        for args, route in COMMANDS:
            result = stack.cli(args)
            shown = " ".join(a if " " not in a else f"'{a}'" for a in args)
            print(f"$ openstack --os-profile $KEY {shown}   "
                  f"# exit {result.returncode}, {result.seconds:.2f}s")
            print(result.stdout.rstrip())
            print("--- stderr ---")
            print(result.stderr.rstrip())
            if result.trace_id:
                trace_id = uuid.UUID(result.trace_id).int
                print("--- trace", f"{trace_id:032x}", "---")
                print(render_tree(stack.trace(trace_id, route), detail))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
