"""The HTTP server: ``/metrics`` and ``/healthz`` around a running engine."""
