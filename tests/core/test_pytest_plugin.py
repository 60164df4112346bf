"""The `audit_events` fixture is registered through the pytest11 entry point and reports mismatches clearly."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_fixture_available_to_any_project(pytester) -> None:
    pytester.makepyfile(
        """
        import otel_audit

        def test_emits(audit_events):
            otel_audit.get_audit_logger().emit("invoice.pay", actor="u1", resource=("invoice", "in-1"))
            audit_events.assert_emitted(action="invoice.pay", actor_id="u1", resource_id="in-1", count=1)
            audit_events.assert_not_emitted(action="invoice.refund")

        def test_mismatch_message(audit_events):
            otel_audit.get_audit_logger().emit("invoice.pay", actor="u1")
            audit_events.assert_emitted(action="invoice.refund")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected a record matching {'action': 'invoice.refund'}, found 0; emitted:*"])
