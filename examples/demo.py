"""The main job: run the document service against a real OTLP receiver and print the audit records that arrived."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import otel_audit  # noqa: E402
from document_service import DocumentService, run_sample_traffic  # noqa: E402
from otel_audit.testing import OTLPReceiver  # noqa: E402


def main() -> None:
    with OTLPReceiver() as receiver, tempfile.TemporaryDirectory() as spool:
        pipeline = otel_audit.configure(service_name="document-service", endpoint=receiver.endpoint, spool_dir=spool)
        run_sample_traffic(DocumentService())
        pipeline.force_flush()
        records = receiver.wait_for(1, timeout=10)
        print(f"{len(records)} audit records arrived at {receiver.endpoint}:")
        print(f"{'event':<24} {'outcome':<8} {'actor':<8} {'resource':<22} detail")
        for record in records:
            attributes = record.attributes
            resource = f"{attributes.get('audit.resource.type', '')}/{attributes.get('audit.resource.id', '')}".strip("/")
            detail = attributes.get("audit.reason") or attributes.get("audit.changes") or ""
            print(f"{record.event_name:<24} {attributes['audit.outcome']:<8} {attributes.get('user.id', ''):<8} "
                  f"{resource:<22} {detail}")
        otel_audit.shutdown()


if __name__ == "__main__":
    main()
