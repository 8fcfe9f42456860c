"""``zaqar-otel``: operator tools (placeholder until the CLI lands)."""


def main() -> None:
    raise SystemExit("zaqar-otel: not implemented yet")
