"""Tests that run the real otelcol-audit collector (see conftest.py for reusable helpers)."""
