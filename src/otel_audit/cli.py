"""The `otel-audit` command: serve the store, search and tail events, manage API keys, apply retention.

Each subcommand registers itself in COMMANDS (name -> function adding its parser); new areas (e.g. `alerts`)
add one entry. `serve`, `keys` and `retention` work on the database (--db); `search` and `tail` talk to a running
store over HTTP (--url, --api-key or OTEL_AUDIT_URL / OTEL_AUDIT_API_KEY).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_PORT = 8400
_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class CliError(Exception):
    """A usage or input error: printed without a traceback, exit status 2."""


def parse_duration(text: str) -> _dt.timedelta:
    """`30s`, `15m`, `12h`, `365d`, `2w` -> timedelta."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise CliError(f"invalid duration {text!r}: use a number and a unit s/m/h/d/w, e.g. 365d")
    return _dt.timedelta(seconds=int(match.group(1)) * _DURATION_SECONDS[match.group(2)])


def _since(text: str | None) -> Any:
    """A --since/--until value: a duration ago (e.g. 1h) or an RFC 3339 time."""
    if text is None:
        return None
    return parse_duration(text) if _DURATION_RE.match(text.strip()) else text


def _dev_keys(values: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        secret, sep, tenant = value.rpartition(":")
        if not sep or not secret or not tenant:
            raise CliError(f"--dev-key must be KEY:TENANT, got {value[:8]!r}...")
        pairs.append((secret, tenant))
    return pairs


# serve -------------------------------------------------------------------------------------------------------

def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="sqlite:///file.db or postgresql://... "
                        "(default: $OTEL_AUDIT_STORE_DB, else sqlite:///otel-audit.db)")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .store import StoreSettings, bootstrap_key, create_app, open_storage
    from .store.app import tune_server_gc
    from .store.http_protocol import HTTP_PROTOCOL
    from .store.webhooks import WebhookSettings

    if args.workers < 1:
        raise CliError("--workers must be at least 1")

    env_keys = [item for item in os.environ.get("OTEL_AUDIT_STORE_DEV_KEYS", "").split(",") if item.strip()]
    dev_keys = _dev_keys([*env_keys, *args.dev_key])
    storage = open_storage(args.db)
    for secret, tenant in dev_keys:
        key = bootstrap_key(storage, secret, tenant)
        print(f"otel-audit: dev key {key.key_id} for tenant {tenant!r} (scopes: {', '.join(key.scopes)})",
              file=sys.stderr)
    settings = StoreSettings(max_body_bytes=args.max_body_bytes, max_decompressed_bytes=args.max_decompressed_bytes)
    env_hosts = [item.strip() for item in os.environ.get("OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS", "").split(",") if item.strip()]
    allow_hosts = [*env_hosts, *args.webhook_allow_host]
    print(f"otel-audit: store on http://{args.host}:{args.port} (OTLP/HTTP: /v1/logs), db {args.db or 'default'}",
          file=sys.stderr, flush=True)
    server_options = {"host": args.host, "port": args.port, "log_level": args.log_level,
                      "access_log": args.access_log, "timeout_keep_alive": 30, "http": HTTP_PROTOCOL}
    if args.workers > 1:
        storage.close()
        os.environ.update({
            "OTEL_AUDIT_STORE_MAX_BODY_BYTES": str(args.max_body_bytes),
            "OTEL_AUDIT_STORE_MAX_DECOMPRESSED_BYTES": str(args.max_decompressed_bytes),
            "OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS": ",".join(allow_hosts),
            **({"OTEL_AUDIT_STORE_DB": args.db} if args.db else {}),
        })
        uvicorn.run("otel_audit.store.app:app_from_environment", factory=True, workers=args.workers, **server_options)
        return 0
    webhooks = WebhookSettings.from_env(allow_hosts=tuple(allow_hosts))
    tune_server_gc()
    try:
        # The app closes the storage when it shuts down: uvicorn re-raises SIGTERM once it has stopped, which
        # ends the process before this `finally` runs.
        uvicorn.run(create_app(storage, settings=settings, webhooks=webhooks, owns_storage=True), **server_options)
    finally:
        storage.close()
    return 0


def add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the store (OTLP/HTTP ingest + search API)")
    _add_db(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--dev-key", action="append", default=[], metavar="KEY:TENANT",
                        help="register KEY (all scopes) for TENANT at startup; repeatable; also "
                             "$OTEL_AUDIT_STORE_DEV_KEYS=KEY:TENANT,... (for demos and tests)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (ingest decoding is CPU-bound; use one per core)")
    parser.add_argument("--max-body-bytes", type=int, default=16 << 20)
    parser.add_argument("--max-decompressed-bytes", type=int, default=64 << 20)
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--webhook-allow-host", action="append", default=[], metavar="HOST",
                        help="let webhooks reach this host name, IP or CIDR even if private/loopback; repeatable; "
                             "also $OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS=a,b")
    parser.set_defaults(func=cmd_serve)


# search / tail -----------------------------------------------------------------------------------------------

def _add_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("OTEL_AUDIT_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
                        help="store URL (default $OTEL_AUDIT_URL or http://127.0.0.1:8400)")
    parser.add_argument("--api-key", default=os.environ.get("OTEL_AUDIT_API_KEY"),
                        help="API key with the read scope (default $OTEL_AUDIT_API_KEY)")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--action", help="exact action, or a prefix ending in * (user.*)")
    parser.add_argument("--actor-id")
    parser.add_argument("--resource-type")
    parser.add_argument("--resource-id")
    parser.add_argument("--outcome", choices=["success", "failure", "denied", "unknown"])
    parser.add_argument("--text", "-q", help="free text in the event metadata")


def _filter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in ("action", "actor_id", "resource_type", "resource_id", "outcome", "text")
            if getattr(args, name) is not None}


def _client(args: argparse.Namespace) -> Any:
    from .client import AuditClient

    if not args.api_key:
        raise CliError("an API key is needed: --api-key or OTEL_AUDIT_API_KEY")
    return AuditClient(args.url, args.api_key)


_TABLE_COLUMNS = (("time", 27), ("action", 24), ("outcome", 8), ("actor", 18), ("resource", 28), ("uid", 36))


def _row(event: Any) -> list[str]:
    resource = f"{event.resource_type or ''}:{event.resource_id or ''}" if event.resource_type else ""
    return [event.time.isoformat().replace("+00:00", "Z"), event.action, event.outcome, event.actor_id or "",
            resource, event.uid]


def _print_table(events: Sequence[Any], header: bool = True) -> None:
    if header:
        print("  ".join(name.upper().ljust(width) for name, width in _TABLE_COLUMNS).rstrip())
    for event in events:
        print("  ".join(cell.ljust(width) for cell, (_, width) in zip(_row(event), _TABLE_COLUMNS)).rstrip())


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "uid": event.uid, "time": event.time.isoformat().replace("+00:00", "Z"), "tenant_id": event.tenant_id,
        "action": event.action, "outcome": event.outcome, "actor_id": event.actor_id,
        "resource_type": event.resource_type, "resource_id": event.resource_id, "severity": event.severity_text,
        "trace_id": event.trace_id, "span_id": event.span_id, "attributes": event.attributes,
        "resource": event.resource,
    }


def cmd_search(args: argparse.Namespace) -> int:
    with _client(args) as client:
        filters = _filter_kwargs(args)
        filters["since"], filters["until"] = _since(args.since), _since(args.until)
        events = []
        for event in client.iter_events(page_size=min(args.limit, 1000), **filters):
            events.append(event)
            if len(events) >= args.limit:
                break
    if args.json:
        print(json.dumps([_event_json(event) for event in events], indent=2, ensure_ascii=False, default=str))
    else:
        _print_table(events)
        print(f"({len(events)} event{'s' if len(events) != 1 else ''})", file=sys.stderr)
    return 0


def add_search(subparsers: Any) -> None:
    parser = subparsers.add_parser("search", help="search stored events (newest first)")
    _add_remote(parser)
    _add_filters(parser)
    parser.add_argument("--since", help="a duration ago (1h, 7d) or an RFC 3339 time")
    parser.add_argument("--until", help="a duration ago or an RFC 3339 time (exclusive)")
    parser.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.set_defaults(func=cmd_search)


def cmd_tail(args: argparse.Namespace) -> int:
    filters = _filter_kwargs(args)
    with _client(args) as client:
        _, token = client.tail()
        print(f"otel-audit: following new events at {args.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        if args.last:
            recent = client.search_events(limit=args.last, **filters).events
            _print_events(list(reversed(recent)), args.json, header=True)
        header = not args.last
        printed = 0
        while args.max_events is None or printed < args.max_events:
            events, token = client.tail(after=token)
            matching = [event for event in events if _matches(event, filters)]
            if args.max_events is not None:
                matching = matching[: args.max_events - printed]
            if matching:
                _print_events(matching, args.json, header=header)
                header = False
                printed += len(matching)
            if not events:
                time.sleep(args.interval)
    return 0


def _matches(event: Any, filters: dict[str, Any]) -> bool:
    for name, value in filters.items():
        if name == "text":
            if value.lower() not in json.dumps(event.attributes.get("audit.metadata", {}), ensure_ascii=False).lower():
                return False
        elif name == "action" and value.endswith("*"):
            if not event.action.startswith(value.rstrip("*")):
                return False
        elif getattr(event, name) != value:
            return False
    return True


def _print_events(events: Sequence[Any], as_json: bool, header: bool) -> None:
    if as_json:
        for event in events:
            print(json.dumps(_event_json(event), ensure_ascii=False, default=str), flush=True)
    else:
        _print_table(events, header=header)
        sys.stdout.flush()


def add_tail(subparsers: Any) -> None:
    parser = subparsers.add_parser("tail", help="follow new events as they are stored")
    _add_remote(parser)
    _add_filters(parser)
    parser.add_argument("--last", type=int, default=10, help="first show this many recent events (default 10)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls when idle")
    parser.add_argument("--max-events", type=int, default=None, help="exit after printing this many events")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=cmd_tail)


# keys --------------------------------------------------------------------------------------------------------

def cmd_keys(args: argparse.Namespace) -> int:
    from .store import open_storage
    from .store.keys import create_key

    storage = open_storage(args.db)
    try:
        if args.keys_command == "create":
            key, secret = create_key(storage, args.tenant, args.scopes.split(","), args.name)
            if args.json:
                print(json.dumps({**key.to_json(), "secret": secret}))
            else:
                print(f"created {key.key_id} for tenant {key.tenant_id!r} (scopes: {', '.join(key.scopes)})",
                      file=sys.stderr)
                print("the secret is shown only now:", file=sys.stderr)
                print(secret)
        elif args.keys_command == "list":
            keys = storage.list_keys(args.tenant)
            if args.json:
                print(json.dumps([key.to_json() for key in keys], indent=2))
            else:
                for key in keys:
                    state = "revoked" if key.revoked_unix_nano else "active"
                    print(f"{key.key_id}  {key.tenant_id}  {','.join(key.scopes)}  {state}  {key.name}")
        elif args.keys_command == "revoke":
            if not storage.revoke_key(args.key_id, time.time_ns()):
                raise CliError(f"no active key {args.key_id!r}")
            print(f"revoked {args.key_id} (running stores stop accepting it within 5 s)", file=sys.stderr)
    finally:
        storage.close()
    return 0


def add_keys(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys (directly in the database)")
    keys = parser.add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; prints its secret once")
    _add_db(create)
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", default="ingest,read", help="comma-separated: ingest,read,admin")
    create.add_argument("--name", default="")
    create.add_argument("--json", action="store_true")
    listing = keys.add_parser("list", help="list keys (never secrets)")
    _add_db(listing)
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    _add_db(revoke)
    revoke.add_argument("key_id")
    parser.set_defaults(func=cmd_keys)


# retention ---------------------------------------------------------------------------------------------------

def cmd_retention(args: argparse.Namespace) -> int:
    from .store import open_storage

    cutoff = _dt.datetime.now(_dt.timezone.utc) - parse_duration(args.older_than)
    cutoff_ns = int(cutoff.timestamp()) * 1_000_000_000
    storage = open_storage(args.db)
    try:
        if args.dry_run:
            count = storage.count_older_than(cutoff_ns, args.tenant)
            print(f"{count} events older than {cutoff.isoformat()} would be deleted")
        else:
            count = storage.delete_older_than(cutoff_ns, args.tenant)
            print(f"deleted {count} events older than {cutoff.isoformat()}")
    finally:
        storage.close()
    return 0


def add_retention(subparsers: Any) -> None:
    parser = subparsers.add_parser("retention", help="delete events older than a duration")
    _add_db(parser)
    parser.add_argument("--older-than", required=True, help="e.g. 365d, 12w, 48h")
    parser.add_argument("--tenant", help="only this tenant's events")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    parser.set_defaults(func=cmd_retention)


# alerts ------------------------------------------------------------------------------------------------------

def _print_json(value: Any) -> None:
    import dataclasses

    def plain(item: Any) -> Any:
        return dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item

    data = [plain(item) for item in value] if isinstance(value, list) else plain(value)
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _rule_condition(args: argparse.Namespace) -> dict[str, Any]:
    condition: dict[str, Any] = {"action": args.action, "count": args.count, "window_seconds": args.window}
    if args.outcome:
        condition["outcome"] = args.outcome
    if args.group_by:
        condition["group_by"] = args.group_by
    filters: dict[str, Any] = {}
    for item in args.where:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--where must be ATTRIBUTE=VALUE, got {item!r}")
        filters.setdefault(name, []).append(value)
    if filters:
        condition["attributes"] = {name: values[0] if len(values) == 1 else values for name, values in filters.items()}
    return condition


def cmd_alerts(args: argparse.Namespace) -> int:
    with _client(args) as client:
        command = args.alerts_command
        if command == "list":
            alerts = client.list_alerts(rule_id=args.rule, limit=args.limit)
            if args.json:
                _print_json(alerts)
            for alert in [] if args.json else alerts:
                group = ", ".join(f"{name}={value}" for name, value in alert.group.items()) or "-"
                print(f"{alert.fired_at}  {alert.id}  [{alert.rule.get('severity')}] {alert.rule.get('name')}  "
                      f"{alert.count} events  {group}")
        elif command == "deliveries":
            deliveries = client.list_webhook_deliveries(webhook_id=args.webhook, alert_id=args.alert,
                                                        status=args.status, limit=args.limit)
            if args.json:
                _print_json(deliveries)
            for item in [] if args.json else deliveries:
                print(f"{item.id}  {item.status:9}  attempts {item.attempts}/{item.max_attempts}  "
                      f"alert {item.alert_id}  webhook {item.webhook_id}  {item.last_error or ''}".rstrip())
        elif command == "rules":
            _rules_command(client, args)
        elif command == "webhooks":
            _webhooks_command(client, args)
    return 0


def _rules_command(client: Any, args: argparse.Namespace) -> None:
    action = args.rules_command
    if action == "list":
        rules = client.list_alert_rules()
        if args.json:
            _print_json(rules)
            return
        for rule in rules:
            state = "enabled" if rule.enabled else "disabled"
            condition = rule.condition
            outcome = "/" + condition["outcome"] if condition.get("outcome") else ""
            group_by = " by " + ",".join(condition["group_by"]) if condition.get("group_by") else ""
            print(f"{rule.id}  {state:8}  [{rule.severity}] {rule.name}: {condition['count']}x {condition['action']}"
                  f"{outcome} in {condition['window_seconds']:g} s{group_by}")
    elif action == "create":
        rule = client.create_alert_rule(args.name, _rule_condition(args), severity=args.severity,
                                        webhook_ids=args.webhook, cooldown_seconds=args.cooldown,
                                        description=args.description)
        if args.json:
            _print_json(rule)
        else:
            print(f"created rule {rule.id}")
    elif action in ("enable", "disable"):
        rule = client.update_alert_rule(args.rule_id, enabled=action == "enable")
        print(f"{rule.id} {'enabled' if rule.enabled else 'disabled'}")
    elif action == "delete":
        client.delete_alert_rule(args.rule_id)
        print(f"deleted rule {args.rule_id}")


def _webhooks_command(client: Any, args: argparse.Namespace) -> None:
    action = args.webhooks_command
    if action == "list":
        webhooks = client.list_webhooks()
        if args.json:
            _print_json(webhooks)
        for webhook in [] if args.json else webhooks:
            print(f"{webhook.id}  {webhook.url}  {webhook.description}".rstrip())
    elif action in ("create", "rotate"):
        if action == "create":
            webhook = client.create_webhook(args.webhook_url, description=args.description)
        else:
            webhook = client.rotate_webhook_secret(args.webhook_id)
        if args.json:
            _print_json(webhook)
        else:
            done = "created" if action == "create" else "rotated"
            print(f"{done} {webhook.id}; the signing secret is shown only now:", file=sys.stderr)
            print(webhook.secret)
    elif action == "delete":
        client.delete_webhook(args.webhook_id)
        print(f"deleted webhook {args.webhook_id}")


def add_alerts(subparsers: Any) -> None:
    parser = subparsers.add_parser("alerts", help="alert rules, webhooks, fired alerts and webhook deliveries")
    commands = parser.add_subparsers(dest="alerts_command", required=True)

    def remote(sub: argparse.ArgumentParser, json_flag: bool = True) -> argparse.ArgumentParser:
        _add_remote(sub)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    listing = remote(commands.add_parser("list", help="fired alerts, newest first"))
    listing.add_argument("--rule", help="only this rule's alerts")
    listing.add_argument("--limit", type=int, default=50)
    deliveries = remote(commands.add_parser("deliveries", help="the webhook delivery log"))
    deliveries.add_argument("--webhook")
    deliveries.add_argument("--alert")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--limit", type=int, default=50)

    rules = commands.add_parser("rules", help="manage alert rules (admin scope)").add_subparsers(
        dest="rules_command", required=True)
    remote(rules.add_parser("list", help="list rules"))
    create = remote(rules.add_parser("create", help="create a threshold rule"))
    create.add_argument("--name", required=True)
    create.add_argument("--action", required=True, help="exact action or glob (user.*)")
    create.add_argument("--outcome", choices=["success", "failure", "denied", "unknown"])
    create.add_argument("--count", type=int, required=True, help="events within the window that fire the alert")
    create.add_argument("--window", type=float, required=True, help="window in seconds (event time)")
    create.add_argument("--group-by", action="append", default=[], metavar="ATTRIBUTE", help="e.g. user.id; repeatable")
    create.add_argument("--where", action="append", default=[], metavar="ATTRIBUTE=VALUE",
                        help="attribute filter; repeat a name for alternatives")
    create.add_argument("--severity", default="medium", choices=["info", "low", "medium", "high", "critical"])
    create.add_argument("--cooldown", type=float, default=None, help="quiet seconds after firing (default: window)")
    create.add_argument("--webhook", action="append", default=[], metavar="WEBHOOK_ID", help="notify; repeatable")
    create.add_argument("--description", default="")
    for name in ("enable", "disable", "delete"):
        remote(rules.add_parser(name, help=f"{name} a rule"), json_flag=False).add_argument("rule_id")

    webhooks = commands.add_parser("webhooks", help="manage webhooks (admin scope)").add_subparsers(
        dest="webhooks_command", required=True)
    remote(webhooks.add_parser("list", help="list webhooks"))
    create_webhook = remote(webhooks.add_parser("create", help="register a webhook; prints its secret once"))
    create_webhook.add_argument("webhook_url", metavar="URL", help="https://... (where alerts are posted)")
    create_webhook.add_argument("--description", default="")
    remote(webhooks.add_parser("rotate", help="new signing secret; prints it once")).add_argument("webhook_id")
    remote(webhooks.add_parser("delete", help="delete a webhook"), json_flag=False).add_argument("webhook_id")
    parser.set_defaults(func=cmd_alerts)


COMMANDS: dict[str, Callable[[Any], None]] = {
    "serve": add_serve,
    "search": add_search,
    "tail": add_tail,
    "keys": add_keys,
    "retention": add_retention,
    "alerts": add_alerts,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="otel-audit", description="otel-audit: audit events as OpenTelemetry logs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `otel-audit` console script."""
    args = build_parser().parse_args(argv)
    import httpx

    from .client import AuditClientError
    from .store import ApiKeyError, StorageError

    try:
        return int(args.func(args) or 0)
    except (CliError, ApiKeyError, StorageError) as exc:
        print(f"otel-audit: {exc}", file=sys.stderr)
        return 2
    except AuditClientError as exc:
        print(f"otel-audit: the store answered {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"otel-audit: cannot reach the store at {getattr(args, 'url', '?')}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
