"""Benchmarks of otel-audit side by side with stock OpenTelemetry Python: `python -m benchmarks [--quick]`."""
