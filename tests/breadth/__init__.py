"""zaqar-otel across Zaqar releases, Pythons, OTel SDKs and install layouts
(``make breadth``; see matrix.py)."""
