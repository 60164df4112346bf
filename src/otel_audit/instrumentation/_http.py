"""What the ASGI and WSGI middlewares share: options, route -> action mapping, outcome, client address, ids.

Everything that can be decided once per route or once per middleware is decided here and cached, so the
per-request work of the middlewares is a handful of dict lookups.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigurationError
from ..logger import AuditLogger, emit_positional, error_type_of, reason_of
from ..model import Actor, ActorType, AuditEventError, Outcome
from ..pipeline import current_pipeline
from ..stats import STATS

_log = logging.getLogger("otel_audit.instrumentation")

DEFAULT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED_STATUSES = frozenset({401, 403})
REQUEST_ID_HEADER = "x-request-id"
STATE_KEY = "otel_audit.request"
TRUSTED_PROXIES_ENV = "OTEL_AUDIT_TRUSTED_PROXIES"

_MAX_HEADER_VALUE = 512
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")  # fullmatch: `$` would let "id\n" through
_PARAM_RE = re.compile(r"^(?:\{(?P<brace>[A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|<(?:[^:>]+:)?(?P<angle>[A-Za-z_][A-Za-z0-9_]*)>)$")
_WORD_RE = re.compile(r"[^a-z0-9_-]+")
_ACTION_WORD_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_DIGIT_RUN_RE = re.compile(r"[0-9]{5}")
_COUNTER_BASE = 0xA << 44  # request id counters start with the hex digit `a` (see _request_id_seed)

_VERB_BY_METHOD_ITEM = {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "update", "POST": "update", "DELETE": "delete"}
_VERB_BY_METHOD_COLLECTION = {"GET": "list", "HEAD": "list", "POST": "create", "PUT": "replace", "PATCH": "update", "DELETE": "delete"}

ANONYMOUS = Actor.anonymous()

ActorResolver = Callable[[Any], Any]
StringResolver = Callable[[Any], "str | None"]


def outcome_for_status(status: int) -> Outcome:
    """2xx/3xx success, 401/403 denied, any other 4xx/5xx failure."""
    if status < 400:
        return Outcome.SUCCESS
    if status in DENIED_STATUSES:
        return Outcome.DENIED
    return Outcome.FAILURE


def singular(word: str) -> str:
    """A plain English singular of a URL collection segment: documents -> document, policies -> policy."""
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 1:
        return word[:-1]
    return word


def _action_word(text: str) -> str | None:
    word = _WORD_RE.sub("_", text.lower()).strip("_-")
    return word if _ACTION_WORD_RE.match(word) else None


@dataclass(frozen=True, slots=True)
class RouteAudit:
    """How one (method, route template) is audited: its action, and where the resource comes from."""

    action: str | None
    resource_type: str | None = None
    resource_id_param: str | None = None


def analyze_route(method: str, template: str | None) -> RouteAudit:
    """Derive the action and resource from a route template (Starlette `{id}` or Werkzeug `<int:id>` syntax).

    `/documents/{document_id}` -> `document.<verb>` with the id from `document_id`; a literal after the last
    parameter is the verb (`/documents/{document_id}/share` -> `document.share`); a plural collection route
    (`POST /documents`) -> `document.create`; anything else (`POST /login`) `http.<method>`.
    """
    fallback = RouteAudit(f"http.{_action_word(method) or 'other'}")
    if not template:
        return fallback
    segments = [segment for segment in template.strip("/").split("/") if segment]
    last_param = None
    for index in range(len(segments) - 1, -1, -1):
        match = _PARAM_RE.match(segments[index])
        if match:
            last_param = index
            break
    if last_param is None:
        if not segments or singular(segments[-1]) == segments[-1]:
            return fallback  # not a plural collection name: nothing to call the resource
        resource_type = _action_word(singular(segments[-1]))
        verb = _VERB_BY_METHOD_COLLECTION.get(method)
        if resource_type is None or verb is None:
            return fallback
        return RouteAudit(f"{resource_type}.{verb}", resource_type)
    match = _PARAM_RE.match(segments[last_param])
    assert match is not None
    param = match.group("brace") or match.group("angle")
    preceding = segments[last_param - 1] if last_param > 0 else None
    if preceding is not None and not _PARAM_RE.match(preceding):
        resource_type = _action_word(singular(preceding))
    else:
        resource_type = _action_word(param.removesuffix("_id"))
    if resource_type is None:
        return fallback
    trailing = [segment for segment in segments[last_param + 1:] if not _PARAM_RE.match(segment)]
    verb = _action_word(trailing[-1]) if trailing else _VERB_BY_METHOD_ITEM.get(method)
    if verb is None:
        return fallback
    return RouteAudit(f"{resource_type}.{verb}", resource_type, param)


def to_actor(value: Any) -> Actor | None:
    """An Actor from what auth layers store: an Actor, a string id, a mapping, or a user object.

    User objects (Starlette's BaseUser, Flask-Login's UserMixin, ORM models) give id from `get_id()`, `id`,
    `identity`, `user_id` or `username`, plus `email`, `display_name`/`name` and `roles`; an object whose
    `is_authenticated` is false means nobody is authenticated (None).
    """
    if value is None or isinstance(value, Actor):
        return value
    if isinstance(value, str):
        return Actor(id=value)
    if isinstance(value, Mapping):
        allowed = {"id", "type", "email", "name", "roles", "impersonator_id"}
        return Actor(**{key: item for key, item in value.items() if key in allowed})
    if getattr(value, "is_authenticated", True) is False:
        return None
    actor_id = _attribute_text(value, "get_id", "id", "identity", "user_id", "username")
    roles = getattr(value, "roles", ())
    return Actor(
        id=actor_id,
        type=ActorType.USER,
        email=_attribute_text(value, "email"),
        name=_attribute_text(value, "display_name", "name", "username"),
        roles=tuple(str(role) for role in roles) if isinstance(roles, (list, tuple, set, frozenset)) else (),
    )


def _attribute_text(obj: Any, *names: str) -> str | None:
    for name in names:
        try:
            value = getattr(obj, name, None)
            if callable(value):
                value = value()
        except Exception:  # noqa: BLE001, S112 - user objects may raise (e.g. Starlette's BaseUser.identity)
            continue
        if value is not None and not isinstance(value, bool) and value != "":
            return str(value)
    return None


class TrustedProxies:
    """Which peers may tell us the real client address through X-Forwarded-For / Forwarded (RFC 7239)."""

    def __init__(self, proxies: Iterable[str]) -> None:
        networks = []
        for proxy in proxies:
            try:
                networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
            except ValueError:
                raise ConfigurationError(f"trusted_proxies: not an IP address or CIDR network: {proxy!r}") from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: list[str], forwarded: list[str]) -> str | None:
        """The client address: the socket peer, unless the peer is a trusted proxy; then the nearest untrusted
        hop in Forwarded (preferred) or X-Forwarded-For, read right to left so a client cannot spoof it."""
        if peer is None or not self.networks or not self.is_trusted(peer):
            return peer
        hops = _forwarded_for(forwarded) if forwarded else _comma_items(forwarded_for)
        for hop in reversed(hops):
            if not _is_ip(hop):
                return peer
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer


def _comma_items(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _forwarded_for(values: list[str]) -> list[str]:
    hops = []
    for element in _comma_items(values):
        for pair in element.split(";"):
            key, _, value = pair.strip().partition("=")
            if key.lower() == "for":
                value = value.strip('"')
                if value.startswith("["):
                    value = value[1:value.find("]")] if "]" in value else value
                elif value.count(":") == 1:
                    value = value.split(":", 1)[0]
                hops.append(value)
    return hops


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _request_id_seed() -> tuple[str, int]:
    """A random per-process prefix and counter start for request ids, which need no syscall per request. Unique,
    not secret (they are echoed in logs anyway); drawn again in every forked child.

    The prefix ends in a letter and holds no long run of decimal digits, and the counter's 12 hex digits start with
    `a` (its 2**44 values below 0xb00000000000 leave room for 2**46 ids before it would reach a 13th digit): a word
    of nine or more decimal digits looks like a card or phone number to the redaction processor, which then sends
    the event down its full path (tens of microseconds) instead of its pre-screen. A counter drawn from all 44-bit
    values spelled such a word for long stretches in about one process in fifty.
    """
    prefix = secrets.token_hex(8)
    while _DIGIT_RUN_RE.search(prefix) or prefix[-1].isdigit():
        prefix = secrets.token_hex(8)
    return prefix + "-", _COUNTER_BASE | secrets.randbits(44)


class _RequestIds:
    """Request ids "<prefix><counter as 12+ hex digits>" from _request_id_seed (the reference of _request.c's)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self._prefix, start = _request_id_seed()
        self._counter = itertools.count(start)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


def python_request_id_from(header_value: str | None) -> str:
    """The client's request id when it is a sane token (1-128 URL-safe characters), else a new unique one."""
    if header_value and _REQUEST_ID_RE.fullmatch(header_value):
        return header_value
    return next_request_id()


def session_id_from_cookie(cookie_header: str | None, cookie_name: str) -> str | None:
    """A non-secret session id: the SHA-256 (first 32 hex digits) of the session cookie, never the cookie itself."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie_name and value:
            return hashlib.sha256(value.encode()).hexdigest()[:32]
    return None


def resolve_text(resolver: Callable[[Any], Any], argument: Any, name: str) -> str | None:
    """A resolver's string answer (tenant, session id), or None when it raises or answers a non-string (reported
    as an instrumentation error): the request is then audited without that detail rather than not at all."""
    try:
        return checked_text(resolver(argument), name)
    except Exception as exc:  # noqa: BLE001 - user callbacks must not break the request
        report_failure(exc, f"calling {name}")
        return None


def resolve_actor(resolver: Callable[[Any], Any], argument: Any) -> Actor | None:
    """The actor a resolver names (see to_actor), or None when it fails (reported)."""
    try:
        return to_actor(resolver(argument))
    except Exception as exc:  # noqa: BLE001 - user callbacks must not break the request
        report_failure(exc, "resolving the actor")
        return None


def checked_text(value: Any, source: str) -> str | None:
    """A resolver's answer checked: a string or None, else a typed error naming the resolver."""
    if value is None or isinstance(value, str):
        return clip(value)
    raise AuditEventError(source, f"must return a string or None, got {type(value).__name__}")


def clip(value: str | None) -> str | None:
    """Client-supplied header text, bounded in length so a hostile header cannot bloat or break an event."""
    if value is None or len(value) <= _MAX_HEADER_VALUE:
        return value
    return value[:_MAX_HEADER_VALUE]


def excluded_urls_from_env() -> list[str]:
    """Regexes from OTEL_PYTHON_AUDIT_EXCLUDED_URLS, else OTEL_PYTHON_EXCLUDED_URLS (comma separated)."""
    text = os.environ.get("OTEL_PYTHON_AUDIT_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
    return [item.strip() for item in text.split(",") if item.strip()]


def is_strict() -> bool:
    """Whether the audit pipeline runs in `strict` delivery mode (auditing failures must fail the request)."""
    pipeline = current_pipeline()
    return pipeline is not None and pipeline.settings.delivery == "strict"


def report_failure(exc: BaseException, where: str) -> None:
    """Make a failure inside auditing observable (log + `instrumentation_errors`) without breaking the request;
    re-raise it in strict delivery mode, where an unaudited request must not succeed."""
    STATS.increment("instrumentation_errors")
    _log.error("otel-audit: auditing failed while %s", where, exc_info=exc)
    if is_strict():
        raise exc


@dataclass(slots=True)
class PythonRequestState:
    """What the middleware learns about one request, filled in as the request runs (_request.RequestState is the
    same, compiled)."""

    method: str
    path: str
    request_id: str
    client_address: str | None
    user_agent: str | None
    session_id: str | None
    actor: Actor | None
    tenant: str | None
    started_ns: int
    root_path: str = ""
    route_template: str | None = None
    path_params: Mapping[str, Any] | None = None
    status: int | None = None
    error: BaseException | None = None
    emitted: bool = False


try:  # compiled (optional, see _request.c): the state and the ids built in C by the ASGI middleware's begin_request
    from ._request import RequestState, next_request_id, request_id_from, seed_request_ids
except ImportError:  # built without a C compiler
    RequestState = PythonRequestState  # type: ignore[misc]
    next_request_id = _RequestIds().next
    request_id_from = python_request_id_from
else:
    def _seed_request_ids() -> None:
        seed_request_ids(*_request_id_seed())

    _seed_request_ids()
    os.register_at_fork(after_in_child=_seed_request_ids)


@dataclass
class AuditOptions:
    """Validated middleware options (shared by ASGI and WSGI)."""

    methods: frozenset[str] = DEFAULT_METHODS
    excluded: re.Pattern[str] | None = None
    actions: Mapping[str, str | None] = field(default_factory=dict)
    actor_resolver: ActorResolver | None = None
    tenant_resolver: StringResolver | None = None
    session_resolver: StringResolver | None = None
    session_cookie: str | None = None
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies(()))
    request_id_header: str = REQUEST_ID_HEADER
    _routes: dict[tuple[str, str | None], RouteAudit] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        *,
        methods: Iterable[str] | None = None,
        excluded_urls: Iterable[str] | str | None = None,
        actions: Mapping[str, str | None] | None = None,
        actor_resolver: ActorResolver | None = None,
        tenant_resolver: StringResolver | None = None,
        session_resolver: StringResolver | None = None,
        session_cookie: str | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        request_id_header: str = REQUEST_ID_HEADER,
    ) -> AuditOptions:
        """Check and precompute the options; raise ConfigurationError naming the bad argument."""
        if isinstance(methods, str):
            methods = [item for item in methods.split(",") if item.strip()]
        for method in DEFAULT_METHODS if methods is None else methods:
            if not isinstance(method, str) or not method.strip().isalpha():
                raise ConfigurationError(f"methods: not an HTTP method: {method!r}")
        method_set = frozenset(m.strip().upper() for m in (DEFAULT_METHODS if methods is None else methods))
        if excluded_urls is None:
            patterns = excluded_urls_from_env()
        elif isinstance(excluded_urls, str):
            patterns = [item.strip() for item in excluded_urls.split(",") if item.strip()]
        else:
            patterns = list(excluded_urls)
        try:
            excluded = re.compile("|".join(f"(?:{pattern})" for pattern in patterns)) if patterns else None
        except re.error as exc:
            raise ConfigurationError(f"excluded_urls: invalid regular expression: {exc}") from None
        checked_actions: dict[str, str | None] = {}
        for key, action in (actions or {}).items():
            if action is not None and not re.match(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$", action):
                raise ConfigurationError(f"actions[{key!r}]: must be lower-case dotted words like 'document.share'")
            checked_actions[key] = action
        for name, value in (("actor_resolver", actor_resolver), ("tenant_resolver", tenant_resolver),
                            ("session_resolver", session_resolver)):
            if value is not None and not callable(value):
                raise ConfigurationError(f"{name}: must be callable, got {type(value).__name__}")
        if trusted_proxies is None:
            trusted_proxies = os.environ.get(TRUSTED_PROXIES_ENV, "")
        if isinstance(trusted_proxies, str):
            trusted_proxies = [item for item in trusted_proxies.split(",") if item.strip()]
        return cls(
            methods=method_set,
            excluded=excluded,
            actions=checked_actions,
            actor_resolver=actor_resolver,
            tenant_resolver=tenant_resolver,
            session_resolver=session_resolver,
            session_cookie=session_cookie,
            trusted_proxies=TrustedProxies(trusted_proxies),
            request_id_header=request_id_header.lower(),
        )

    def route_audit(self, method: str, template: str | None) -> RouteAudit:
        """The cached RouteAudit of a method and route template (an `actions` entry wins over the derived one)."""
        key = (method, template)
        found = self._routes.get(key)
        if found is None:
            found = analyze_route(method, template)
            if template is not None:
                for override_key in (f"{method} {template}", template):
                    if override_key in self.actions:
                        found = RouteAudit(self.actions[override_key], found.resource_type, found.resource_id_param)
                        break
            if len(self._routes) < 10_000:
                self._routes[key] = found
        return found

    def wants(self, method: str, status: int) -> bool:
        """Whether a finished request is audited: an audited method, or an access denial on any method."""
        return method in self.methods or status in DENIED_STATUSES


def python_emit_request_event(logger: AuditLogger, options: AuditOptions, state: RequestState) -> None:
    """Emit the audit event of a finished request, if it is one the options audit (`_request.emit_request_event` is
    the same, compiled, and hands requests that ended in an exception to this one)."""
    status = state.status or 500
    if state.emitted or not options.wants(state.method, status):
        return
    route = options.route_audit(state.method, state.route_template)
    if route.action is None:
        return
    state.emitted = True
    error = state.error
    error_type: str | None
    if error is not None:
        outcome = Outcome.FAILURE if isinstance(error, Exception) else Outcome.UNKNOWN
        error_type, reason = error_type_of(error), reason_of(error)
    else:
        outcome = outcome_for_status(status)
        error_type = str(status) if outcome is not Outcome.SUCCESS else None
        reason = None
    resource = None
    if route.resource_type is not None:
        resource_id = None
        if route.resource_id_param is not None and state.path_params:
            value = state.path_params.get(route.resource_id_param)
            resource_id = None if value is None else str(value)
        resource = (route.resource_type, resource_id)
    # emit's arguments in its order (see logger.emit_positional): changes, severity and timestamp are never given.
    emit_positional(
        logger, route.action, state.actor or ANONYMOUS, resource, outcome,
        # Milliseconds to the nearest microsecond, in integer arithmetic (cheaper than round(ns / 1e6, 3)).
        {"duration_ms": (time.perf_counter_ns() - state.started_ns + 500) // 1000 / 1000},
        None, reason, error_type, None, state.tenant, state.client_address, state.user_agent, state.session_id,
        state.request_id, state.method, state.route_template, state.path, status, None,
    )


try:  # compiled (optional, see _request.c)
    from ._request import configure_request_events, emit_request_event
except ImportError:  # built without a C compiler
    emit_request_event = python_emit_request_event
else:
    configure_request_events(
        emit_positional, python_emit_request_event, Outcome.SUCCESS, Outcome.FAILURE, Outcome.DENIED, ANONYMOUS,
    )
