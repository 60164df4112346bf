"""An emitting process for delivery tests: `emitter.py ENDPOINT SPOOL_DIR COUNT [--delay S] [--drain S] [--mode M] [--burst]`.

Configures otel-audit, emits COUNT audit events (metadata `seq` = 1..COUNT) and prints `uid <uid> <seq>` on stdout
once each emit returned, then `emitted` and, with --drain, waits up to S seconds for the spool to empty and prints
`drained <bool>`.
"""

from __future__ import annotations

import argparse
import sys
import time

import otel_audit


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("spool_dir")
    parser.add_argument("count", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--drain", type=float, default=0.0)
    parser.add_argument("--mode", default="disk")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--burst", action="store_true", help="emit one prebuilt event COUNT times, print nothing per emit")
    args = parser.parse_args()
    pipeline = otel_audit.configure(
        service_name="emitter",
        endpoint=args.endpoint,
        spool_dir=args.spool_dir,
        delivery=args.mode,
        flush_interval=0.05,
        max_batch_size=args.batch,
        redaction=False,
    )
    audit = otel_audit.get_audit_logger("emitter")
    if args.burst:
        event = otel_audit.AuditEvent(
            action="document.update", actor=otel_audit.Actor(id="user-1"), resource=otel_audit.Resource("document", "d")
        )
        for _ in range(args.count):
            audit.emit_event(event)
        args.count = 0
    for seq in range(1, args.count + 1):
        uid = audit.emit("document.update", actor="user-1", resource=("document", f"doc-{seq}"), metadata={"seq": seq})
        sys.stdout.write(f"uid {uid} {seq}\n")
        sys.stdout.flush()
        if args.delay:
            time.sleep(args.delay)
    print("emitted", flush=True)
    if args.drain:
        print("drained", pipeline.force_flush(int(args.drain * 1000)), flush=True)
    otel_audit.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
