"""Redaction of secrets and PII in audit records, before anything is hashed, spooled or exported.

Two kinds of rules work together:

* key rules: a value stored under a sensitive name (`password`, `apiKey`, `X-API-KEY`, `set-cookie`, `card_number`,
  ...) is redacted whatever it looks like. Names compare case- and separator-insensitively;
* value detectors: secrets hiding under innocent names (JWTs, bearer/basic credentials, cloud and SaaS keys, PEM
  private keys, Luhn-valid card numbers, US SSNs, IBANs, passwords in URLs, `?token=` query strings, `password=...`
  inside free text; emails and phone numbers when enabled) are replaced inside the string, the rest kept.

Every attribute, the nested maps and lists of `audit.metadata` / `audit.changes`, and the body are covered, and
`audit.redacted` lists the paths that were touched. Redaction fails closed: a value whose redaction raises is masked
as a whole and counted in `processor_errors`; emit never raises because of redaction.

Speed (the emit path): RedactionProcessor first asks Redactor.is_clean, which only reads. When the optional C
extension is built (_screen.c), it walks the record once and applies per value the same rules as values_clean and
surely_clean below, which stay the reference and the fallback. In Python, maps of one shape share
a plan that knows each key's decision and the form its value had; every value is still verified on every record:
the texts of the whole record are joined and go through one conservative pre-screen (surely_clean: two
bytes.translate calls and a few substring tests that prove no detector can match), timestamps are checked by their
digit shape, other scalars against the values already found clean. Only records the fast path cannot clear take
the full path (changes_in), where values never seen meet the detectors: precompiled patterns that start with a
literal or a character class.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from .. import semconv
from ..config import ConfigurationError
from ..stats import STATS

try:  # the compiled fast path (optional: built at install when a C compiler is present)
    from ._screen import RedactionStage as _CompiledRedactionStage
    from ._screen import attributes_clean as _compiled_attributes_clean
    from ._screen import value_clean as _compiled_value_clean
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _compiled_attributes_clean = _compiled_value_clean = _CompiledRedactionStage = None

MASK = "[REDACTED]"
STRATEGIES = ("mask", "drop", "last4", "hash")
HASH_KEY_ENV = "OTEL_AUDIT_REDACTION_KEY"

# Sensitive key names, compared after normalisation (lower case, separators removed). Names shorter than five
# characters must be a whole word of the key (`user_ssn`, `pin`), longer ones may appear anywhere (`db_password`).
DEFAULT_KEYS = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey",
    "privatekey", "signingkey", "encryptionkey", "authorization", "auth", "cookie", "setcookie", "credential",
    "ssn", "socialsecurity", "cardnumber", "creditcard", "ccnumber", "cvv", "cvc", "pin", "iban", "otp", "jwt",
)

# Detector names; the PII ones are off unless configured.
DETECTORS = (
    "jwt", "bearer", "basic", "aws", "gcp", "github", "slack", "stripe", "pem", "url_password", "key_value",
    "card", "ssn", "iban", "email", "phone",
)
PII_DETECTORS = ("email", "phone")

# Attributes this library fills from validated enums, generated ids or its own bookkeeping: nothing to find there.
TRUSTED_KEYS = frozenset(
    {
        semconv.AUDIT_ACTION, semconv.AUDIT_OUTCOME, semconv.AUDIT_ACTOR_TYPE, semconv.LOG_RECORD_UID,
        semconv.AUDIT_REDACTED, semconv.AUDIT_CHAIN_ID, semconv.AUDIT_CHAIN_SEQ, semconv.AUDIT_CHAIN_PREV,
        semconv.AUDIT_CHAIN_HASH, semconv.HTTP_RESPONSE_STATUS_CODE,
    }
)

_MIN_SECRET_LEN = 6  # the shortest match of any detector but key_value (`a@b.co`); see Redactor.min_secret_len
_SMALLEST_CARD = 10**12  # card numbers have at least 13 digits
_CLEAN_CACHE_MAX = 32768
_PLANS_MAX = 1024
_REDACTED_CACHE_MAX = 4096
_CACHEABLE_LEN = 256
_FAST_PATH_TRIES = 8  # records in a row the emit fast path may fail before it pauses ...
_FAST_PATH_PAUSE = 56  # ... for this many records

# The pre-screen (Redactor.surely_clean) proves that no detector can match a string with one bytes.translate call
# and a few substring tests instead of the detectors' regex scans. Every detector match needs at least one of:
#   * a byte outside the safe set below: upper case (JWT `eyJ`, AWS/GCP keys, PEM, `Bearer`, IBAN), `_` (GitHub,
#     Stripe), `=` or `:` (key_value, url_password), white space (bearer/basic `\s`, card/SSN/phone separators),
#     any non-ASCII byte (Unicode white space), and when enabled `@` (email), `+` or `(` (phone);
#   * a lower-case literal: `xox`, `xapp-`, `ya29.`, `hooks.slack.com/services/`;
#   * a chain of whole all-digit words (no letter or digit before or after it) joined by single `-` (and `.` with
#     phone detection on) that a number detector could match: a card has 13 to 19 digits, in one word or several;
#     an SSN (3-2-4) and a phone number without `+`/`(` (3-3-4) are several words of 9 and 10 digits. So a chain
#     counts when it holds 13 digits, or 9 in two or more words; one word of 9-12 digits (the last group of a
#     UUID, an order number) matches nothing. Nine digits in a row once the joiners are removed is the cheap
#     test; _DIGIT_CHAIN_RE then finds the chains on a map of the words and _chain_may_match weighs each.
# Strings with none of these (ids, UUIDs, hex, slugs, versions, paths, dates) are clean. ISO 8601 timestamps have
# `:` and `T`, so their digit shapes are listed instead (_TIMESTAMP_SHAPES). tests/processors/test_prescreen.py
# checks all of this against the detectors with hypothesis, for single strings and for `/`-joined ones.
_SAFE_PUNCTUATION = "-./,;!?#$%&*~^|`'\"\\<>[]{})"
_DIGIT_SHAPE = bytes.maketrans(b"0123456789", b"9999999999")


def _class_table(safe: str, joiners: str) -> bytes:
    """bytes.translate table of the pre-screen: lower-case letters -> `a`, digits -> `9`, `joiners` (the
    separators inside card, SSN and phone numbers) -> `d`, other `safe` punctuation (word boundaries) -> `b`, every
    other byte -> `!` (suspicious)."""
    table = bytearray(b"!" * 256)
    for char in safe:
        table[ord(char)] = ord("b")
    for char in "abcdefghijklmnopqrstuvwxyz":
        table[ord(char)] = ord("a")
    for char in "0123456789":
        table[ord(char)] = ord("9")
    for char in joiners:
        table[ord(char)] = ord("d")
    return bytes(table)


# In that map, a chain: whole all-digit words (not preceded or followed by a letter or digit) joined by single
# separators. Every card, SSN and phone number without `+`/`(` is one, or part of one.
_DIGIT_CHAIN_RE = re.compile(r"(?<![a9])9+(?:d9+)*(?![a9])")


def _chain_may_match(chain: str) -> bool:
    """Whether a number detector could match within this chain (on the map): 13 digits (a card), or 9 digits in
    two or more words (an SSN, a phone number, a grouped card)."""
    digits = chain.count("9")
    return digits >= 13 or (digits >= 9 and "d" in chain)


def _timestamp_shapes() -> frozenset[bytes]:
    """Digit shapes (digits as `9`) of ISO 8601 / RFC 3339 timestamps: date, `T` or space, time, fraction, offset."""
    shapes = {b"9999-99-99"}
    for separator in ("T", " "):
        for time_part in ("99:99", "99:99:99"):
            fractions = [""] + ["." + "9" * count for count in range(1, 10)] if time_part == "99:99:99" else [""]
            for fraction in fractions:
                for offset in ("", "Z", "+99:99", "-99:99", "+9999", "-9999"):
                    # `.123456789-0530` is a 13-digit chain joined by `-`: the shape of a card number
                    chained = fraction.count("9") + (len(offset.split(":")[0]) - 1 if offset[:1] == "-" else 0)
                    if chained < 13:
                        shapes.add(f"9999-99-99{separator}{time_part}{fraction}{offset}".encode())
    return frozenset(shapes)


_TIMESTAMP_SHAPES = _timestamp_shapes()
# Literal-led alternatives only, so `re` can jump to positions starting with one of these characters.
_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA")
_LITERAL_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    + "".join(f"|{prefix}[A-Z0-9]{{16}}(?![A-Z0-9])" for prefix in _AWS_PREFIXES)
    + r"|AIza[0-9A-Za-z_-]{35}"
    r"|ya29\.[0-9A-Za-z_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|xapp-[0-9]-[A-Za-z0-9-]{10,}"
    r"|hooks\.slack\.com/services/[A-Za-z0-9/_-]{10,}"
    r"|sk_live_[A-Za-z0-9]{10,}|sk_test_[A-Za-z0-9]{10,}|rk_live_[A-Za-z0-9]{10,}|rk_test_[A-Za-z0-9]{10,}"
    r"|whsec_[A-Za-z0-9+/=]{20,}"
    r"|-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    + "".join(f"|{word}\\s+[A-Za-z0-9._~+/-]{{12,}}=*" for word in ("Bearer", "bearer", "BEARER"))
    + "".join(f"|{word}\\s+[A-Za-z0-9+/]{{6,}}=*" for word in ("Basic", "basic", "BASIC"))
    + r"|://[^\s:/@?#\[\]]+:[^\s/@?#]+@"
)
# `name=value` and `"name": "value"` pairs inside text (query strings, exception messages, JSON bodies).
# The value is matched separately, only after a sensitive key, and scanning resumes after it: linear in the text.
_KEY_VALUE_RE = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z][A-Za-z0-9_.-]{0,63})([\"']?)[ \t]*([=:])[ \t]*([\"']?)")
_VALUE_RES = {
    # `token=abc&x=1`, `password=hunter2 retry`: up to whitespace or the next pair
    "=": re.compile(r"(?:(?:Bearer|Basic|Token|Digest|bearer|basic|token)[ \t]+)?[^\s\"'&,;}<>]+"),
    # `Authorization: Bearer x`, `Cookie: a=1; b=2`, `db_password: two words`: the rest of the line
    ":": re.compile(r"[^\r\n]+"),
    # `"pin": 1234,` (a quoted key, an unquoted JSON scalar): up to the next comma or brace
    "json": re.compile(r"[^,}\]\s]+"),
    # a quoted value runs to its closing quote, spaces included (`"password": "correct horse battery staple"`)
    '"': re.compile(r'(?:\\.|[^"\\])+'),
    "'": re.compile(r"(?:\\.|[^'\\])+"),
}
# Digit-bearing identifiers: card numbers, SSNs, IBANs. Like the phone pattern below, it starts with a character
# class (so `re` skips positions that cannot start a match) and checks the word boundary behind that first character.
_NUMBER_RE = re.compile(
    r"[0-9A-Z](?<![0-9A-Za-z].)(?:"
    r"(?P<card>(?<=[0-9])(?:[ -]?[0-9]){12,18})"
    r"|(?P<ssn>(?<=[0-8])[0-9]{2}(?<!000)(?<!666)(?P<sep>[- ])(?!00)[0-9]{2}(?P=sep)(?!0000)[0-9]{4})"
    r"|(?P<iban>(?<=[A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30})"
    r")(?![0-9A-Za-z])"
)
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z])"
)
# International numbers (+CC ...) and North American ones with separators: (212) 555-0100, 415-555-0100.
_PHONE_RE = re.compile(
    r"[+(2-9](?<![0-9A-Za-z].)(?:(?<=\+)[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}"
    r"|(?<=\()[2-9][0-9]{2}\)[ .-]?[0-9]{3}[ .-][0-9]{4}"
    r"|(?<=[2-9])[0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4})(?![0-9A-Za-z])"
)

_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "BR": 29, "IL": 23,
}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")

_SKIP = "skip"
_SCAN = "scan"
_DROP = object()
# Where a key is seen: a record attribute, a key inside a nested map, or a `name=value` pair inside text.
_ATTRIBUTE, _NESTED, _TEXT = "a", "n", "t"


class RedactionError(ConfigurationError):
    """The redaction configuration is invalid (unknown strategy or detector, missing hash key)."""


def key_words(name: str) -> list[str]:
    """The lower-case words of a key: `X-API-KEY`, `apiKey` and `api_key` all give ['api', 'key'] (or ['x', ...])."""
    return [word.lower() for word in _NON_ALNUM.split(_CAMEL_BOUNDARY.sub("_", name)) if word]


def normalize_key(name: str) -> str:
    """A key name without case or separators, the form key rules compare."""
    return "".join(key_words(name))


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """Luhn-valid and shaped like a card of a known scheme (Visa, Mastercard, Amex, Discover, JCB, Diners, ...)."""
    length = len(digits)
    if not 13 <= length <= 19 or not luhn_valid(digits):
        return False
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return length in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return length == 16
    if two in (34, 37):
        return length == 15
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= int(digits[:6]) <= 622925:
        return 16 <= length <= 19
    if 3528 <= four <= 3589:
        return 16 <= length <= 19
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):
        return 14 <= length <= 19
    if two in (50, 56, 57, 58, 62, 63, 67, 68, 69):
        return 12 <= length <= 19
    return False


def is_iban(candidate: str) -> bool:
    """ISO 13616: known country length (when known) and the mod-97 check."""
    compact = candidate.replace(" ", "")
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


_SEPARATOR = re.compile(r"[ -]")


def _card_span(candidate: str, start: int) -> tuple[int, int]:
    """(start, length) of a card number within a digit run the regex took whole.

    `4111 1111 1111 1111 2 items` or `qty 1 4111 1111 1111 1111` run into neighbouring numbers, so when the whole
    run is not a card, runs with up to two whole groups trimmed at either end are tried (a bounded number of checks,
    whatever the input). Returns length 0 when none is a card.
    """
    compact = candidate.replace(" ", "").replace("-", "")
    if is_card_number(compact):
        return start, len(candidate)
    bounds = [0] + [match.end() for match in _SEPARATOR.finditer(candidate)]
    ends = [match.start() for match in _SEPARATOR.finditer(candidate)] + [len(candidate)]
    for first in range(min(3, len(bounds))):
        for last in range(len(ends) - 1, max(first, len(ends) - 4) - 1, -1):
            piece = candidate[bounds[first] : ends[last]]
            digits = piece.replace(" ", "").replace("-", "")
            if 13 <= len(digits) <= 19 and is_card_number(digits):
                return start + bounds[first], len(piece)
    return start, 0


def _iban_prefix_length(candidate: str) -> int:
    """Length of the longest valid IBAN at the start of `candidate` (the regex may run on into following words)."""
    parts = candidate.split(" ")
    for count in range(len(parts), max(0, len(parts) - 8), -1):
        prefix = " ".join(parts[:count])
        if len(prefix) >= 15 and is_iban(prefix):
            return len(prefix)
    return 0


def _looks_like_basic_credentials(token: str) -> bool:
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _looks_like_token(token: str) -> bool:
    """A bearer token has digits or token punctuation, not only letters (`Bearer authentication required`)."""
    return any(char.isdigit() or char in "._-~+/=" for char in token)


@dataclass(frozen=True)
class RedactionConfig:
    """How to redact. Strategies: `mask` ([REDACTED]), `drop`, `last4`, `hash` (HMAC-SHA256 with `hash_key`).

    `keys`: extra sensitive key names (a list uses `strategy`; a mapping gives each its own strategy);
    `replace_default_keys` drops the built-in names. `allow_keys`: names never treated as sensitive (exact,
    normalised); with `mode="allowlist"`, keys inside metadata/changes/body that are not allowed are redacted.
    `detectors`: name -> True/False/strategy to enable, disable or re-strategise a detector (email and phone are
    off by default). `hash_key` (or OTEL_AUDIT_REDACTION_KEY) is required when any rule uses `hash`.
    `exempt_keys`: record attributes left alone (build_chain puts the pseudonymized fields here).
    `max_scan_chars`: longer strings are masked whole instead of scanned (fail closed, bounded cost).
    """

    strategy: str = "mask"
    keys: Iterable[str] | Mapping[str, str] = ()
    replace_default_keys: bool = False
    allow_keys: Iterable[str] = ()
    mode: str = "denylist"
    detectors: Mapping[str, bool | str] = field(default_factory=dict)
    hash_key: bytes | str | None = None
    exempt_keys: Iterable[str] = ()
    max_scan_chars: int = 65536

    @classmethod
    def from_setting(cls, setting: Any) -> RedactionConfig | None:
        """AuditSettings.redaction: True (defaults), False/None (off), a RedactionConfig or a mapping of its fields."""
        if setting is True:
            return cls()
        if setting is False or setting is None:
            return None
        if isinstance(setting, cls):
            return setting
        if isinstance(setting, Mapping):
            unknown = sorted(set(setting) - set(cls.__dataclass_fields__))
            if unknown:
                raise RedactionError(f"redaction: unknown option {unknown[0]!r}")
            return cls(**setting)
        raise RedactionError(f"redaction: expected True, False, a mapping or RedactionConfig, got {type(setting).__name__}")


def _check_strategy(strategy: Any, where: str) -> str:
    if strategy not in STRATEGIES:
        raise RedactionError(f"redaction: {where}: unknown strategy {strategy!r} (expected {', '.join(STRATEGIES)})")
    return strategy


def _with_changes(mapping: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `mapping` with the replacements applied (and _DROP-ped keys removed)."""
    changed = dict(mapping)
    for key, new in changes.items():
        if new is _DROP:
            del changed[key]
        else:
            changed[key] = new
    return changed


def _getter(keys: tuple[str, ...] | list[str]) -> Any:
    """A C-level getter of these keys' values, always as a tuple (itemgetter of one key returns the bare value,
    so that key is asked for twice); None for no keys."""
    if not keys:
        return None
    return operator.itemgetter(*keys, *keys[:1]) if len(keys) == 1 else operator.itemgetter(*keys)


class Redactor:
    """The redaction engine over plain values; RedactionProcessor applies it to log records."""

    def __init__(self, config: RedactionConfig | None = None) -> None:
        config = config or RedactionConfig()
        default = self.default_strategy = _check_strategy(config.strategy, "strategy")
        if config.mode not in ("denylist", "allowlist"):
            raise RedactionError(f"redaction: mode must be denylist or allowlist, got {config.mode!r}")
        self.allowlist_mode = config.mode == "allowlist"
        if isinstance(config.max_scan_chars, bool) or not isinstance(config.max_scan_chars, int) or config.max_scan_chars < 1:
            raise RedactionError(f"redaction: max_scan_chars must be a positive integer, got {config.max_scan_chars!r}")
        self.max_scan_chars = config.max_scan_chars
        rules: dict[str, str] = {} if config.replace_default_keys else {name: default for name in DEFAULT_KEYS}
        extra = config.keys.items() if isinstance(config.keys, Mapping) else ((name, default) for name in config.keys)
        for name, strategy in extra:
            normalized = normalize_key(name)
            if not normalized:
                raise RedactionError(f"redaction: keys: {name!r} has no letters or digits")
            rules[normalized] = _check_strategy(strategy, f"keys.{name}")
        # Longest names first, so a specific rule (`cardnumber`: last4) wins over a general one.
        self._key_rules = sorted(rules.items(), key=lambda item: -len(item[0]))
        self._allowed = frozenset(normalize_key(name) for name in config.allow_keys)
        self._exempt = frozenset(config.exempt_keys)

        self.detectors: dict[str, str] = {name: default for name in DETECTORS if name not in PII_DETECTORS}
        for name, setting in config.detectors.items():
            if name not in DETECTORS:
                raise RedactionError(f"redaction: detectors: unknown detector {name!r} (known: {', '.join(DETECTORS)})")
            if setting is False:
                self.detectors.pop(name, None)
            elif setting is True:
                self.detectors[name] = default
            else:
                self.detectors[name] = _check_strategy(setting, f"detectors.{name}")

        uses_hash = "hash" in self.detectors.values() or "hash" in rules.values()
        key = config.hash_key if config.hash_key is not None else os.environ.get(HASH_KEY_ENV)
        if uses_hash and not key:
            raise RedactionError(f"redaction: the hash strategy needs hash_key or {HASH_KEY_ENV}")
        self._hash_key = key.encode() if isinstance(key, str) else key

        detectors = self.detectors
        self._literal = any(
            name in detectors
            for name in ("jwt", "bearer", "basic", "aws", "gcp", "github", "slack", "stripe", "pem", "url_password")
        )
        self._key_value = "key_value" in detectors
        self._numbers = any(name in detectors for name in ("card", "ssn", "iban"))
        self._email = "email" in detectors
        self._phone = "phone" in detectors
        # The pre-screen's table: with email/phone detection on, `@`, `+` and `(` can start a match; phone numbers
        # may be dotted, so dots join digits as dashes do.
        self._words = _class_table(
            _SAFE_PUNCTUATION + ("" if self._email else "@") + ("" if self._phone else "+("),
            "-." if self._phone else "-",
        )
        # key_value matches `pin=1`: a key name, a separator and one character.
        shortest_key = min((len(name) for name, _ in self._key_rules), default=_MIN_SECRET_LEN)
        self.min_secret_len = min(_MIN_SECRET_LEN, shortest_key + 2) if self._key_value else _MIN_SECRET_LEN
        self._key_caches: dict[str, dict[str, str]] = {_ATTRIBUTE: {}, _NESTED: {}, _TEXT: {}}
        self._clean: set[Any] = set()
        self._redacted: dict[bytes, str] = {}
        self._cache_key = os.urandom(16)
        self._plans: dict[str, dict[tuple[str, ...], tuple[Any, ...]]] = {_ATTRIBUTE: {}, _NESTED: {}}
        self._form_plans: dict[str, dict[int, tuple[Any, ...]]] = {_ATTRIBUTE: {}, _NESTED: {}}
        self._form_plans_by_keys: dict[str, dict[tuple[str, ...], tuple[Any, ...]]] = {_ATTRIBUTE: {}, _NESTED: {}}
        self._scanned_keys: set[str] = set()
        # What the compiled screen reads (processors/_screen.c); the dicts and sets are shared, so it always sees
        # the current caches.
        self._screen_config = (
            self._key_caches[_ATTRIBUTE], self._key_caches[_NESTED], self._words, _TIMESTAMP_SHAPES, self._clean,
            self.min_secret_len, self.max_scan_chars, _SKIP, _SCAN,
        )

    # -- keys ---------------------------------------------------------------------------------------------------

    def key_decision(self, key: str, where: str = _ATTRIBUTE) -> str:
        """`skip`, `scan`, or the strategy for a value under this key (cached per key name and place)."""
        cache = self._key_caches[where]
        decision = cache.get(key)
        if decision is None:
            decision = self._decide_key(key, where)
            if len(cache) >= _CLEAN_CACHE_MAX:
                cache.clear()
            cache[key] = decision
        return decision

    def _decide_key(self, key: str, where: str) -> str:
        if where == _ATTRIBUTE and (key in self._exempt or key in TRUSTED_KEYS):
            return _SKIP
        words = key_words(key)
        joined = "".join(words)
        if joined in self._allowed:
            return _SCAN
        for name, strategy in self._key_rules:
            if (name in words) if len(name) < 5 else (name in joined):
                return strategy
        if where == _NESTED and self.allowlist_mode:
            return self.default_strategy
        return _SCAN

    # -- values -------------------------------------------------------------------------------------------------

    def apply(self, strategy: str, value: Any) -> Any:
        """The replacement of a whole value under `strategy` (structure kept, leaves replaced); _DROP to drop it."""
        if strategy == "drop":
            return _DROP
        if isinstance(value, Mapping):
            return {key: self._leaf(strategy, item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._leaf(strategy, item) for item in value]
        return self._replacement(strategy, value)

    def _leaf(self, strategy: str, value: Any) -> Any:
        replaced = self.apply(strategy, value)
        return None if replaced is _DROP else replaced

    def _replacement(self, strategy: str, value: Any) -> Any:
        if value is None:
            return None
        if strategy == "hash":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return "hmac:" + hmac.new(self._hash_key, text.encode(), hashlib.sha256).hexdigest()[:32]  # type: ignore[arg-type]
        if strategy == "last4":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            digits = "".join(char for char in text if char.isalnum())
            return "****" + digits[-4:] if len(digits) >= 12 else MASK
        return MASK

    def redact_text(self, text: str) -> str | None:
        """The text with every detected secret replaced, or None when nothing was found.

        Text longer than `max_scan_chars` is masked whole (fail closed): the detectors are linear, but an attacker
        who controls a huge value should not control how long every emit takes.
        """
        if len(text) < self.min_secret_len or text in self._clean:
            return None
        if len(text) > self.max_scan_chars:
            return MASK
        if self.surely_clean(text):
            self._remember_clean(text)
            return None
        # Values that were redacted before (an email under PII rules, the same token in every record) are looked up
        # by a keyed digest: the cache holds redacted output only, never a secret.
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._cache_key).digest()
        redacted = self._redacted.get(digest)
        if redacted is not None:
            return redacted
        redacted = self.scan_text(text)
        if redacted is None:
            self._remember_clean(text)
        elif len(text) <= _CACHEABLE_LEN:
            if len(self._redacted) >= _REDACTED_CACHE_MAX:
                self._redacted.clear()
            self._redacted[digest] = redacted
        return redacted

    def surely_clean(self, text: str) -> bool:
        """True only when no enabled detector can match `text` (the pre-screen; False means "run the detectors").

        Conservative by construction (see the comment above _SAFE_PUNCTUATION) and checked against the detectors by
        property tests: two bytes.translate calls and a few substring tests, linear and in C.
        """
        try:
            data = text.encode()
        except UnicodeEncodeError:  # lone surrogates: let the detectors decide
            return False
        classes = data.translate(self._words).decode()  # no deleted characters: bytes.translate's fast path
        if "!" in classes:
            return data.translate(_DIGIT_SHAPE) in _TIMESTAMP_SHAPES
        # (`x`, `y` and `k` first: a single character is found by memchr, most strings have none of them)
        if (
            ("x" in text and ("xox" in text or "xapp-" in text))
            or ("y" in text and "ya29." in text)
            or ("k" in text and "hooks.slack.com/services/" in text)
        ):
            return False
        if "999999999" in classes.replace("d", ""):
            # Nine digits in a row inside a hex id are no number: cards, SSNs and phone numbers are made of whole
            # all-digit words joined by single separators, so weigh each such chain.
            return not any(_chain_may_match(chain.group()) for chain in _DIGIT_CHAIN_RE.finditer(classes))
        return True

    def scan_text(self, text: str) -> str | None:
        """The detectors alone, without length limits, pre-screen or caches: the text with every match replaced,
        or None when nothing matched. redact_text's shortcuts must never disagree with it."""
        spans: list[tuple[int, int, str]] = []
        detectors = self.detectors
        if self._literal:
            for match in _LITERAL_RE.finditer(text):
                found = self._classify_literal(match.group())
                if found is not None and found[0] in detectors:
                    start = match.start() + found[1]
                    end = match.end() - found[2]
                    spans.append((start, end, detectors[found[0]]))
        if self._key_value and ("=" in text or ":" in text):
            position = 0
            while (pair := _KEY_VALUE_RE.search(text, position)) is not None:
                position = pair.end()
                decision = self.key_decision(pair.group(1), _TEXT)
                if decision == _SCAN or decision == _SKIP:
                    continue
                quote, separator = pair.group(4), pair.group(3)
                kind = quote or ("json" if pair.group(2) and separator == ":" else separator)
                value = _VALUE_RES[kind].match(text, position)
                if value is None or value.group().startswith((MASK, "hmac:", "****", "//")):
                    continue
                spans.append((value.start(), value.end(), decision))
                position = value.end()
        if self._numbers:
            for match in _NUMBER_RE.finditer(text):
                kind = match.lastgroup
                if kind not in detectors:
                    continue
                candidate = match.group()
                start = match.start()
                if kind == "card":
                    start, length = _card_span(candidate, start)
                elif kind == "iban":
                    length = _iban_prefix_length(candidate)
                else:
                    length = len(candidate)
                if length:
                    spans.append((start, start + length, detectors[kind]))
        if self._email and "@" in text:
            spans.extend((match.start(), match.end(), detectors["email"]) for match in _EMAIL_RE.finditer(text))
        if self._phone:
            for match in _PHONE_RE.finditer(text):
                if 8 <= sum(char.isdigit() for char in match.group()) <= 15:
                    spans.append((match.start(), match.end(), detectors["phone"]))
        return self._splice(text, spans) if spans else None

    def _remember_clean(self, value: Any) -> None:
        """Remember a value found clean: strings up to 256 characters, and numbers too small to be a card number
        (a float equal to a large integer must never vouch for that integer); bounded."""
        kind = type(value)
        if (kind is str and len(value) <= _CACHEABLE_LEN) or (
            (kind is int or kind is float) and -_SMALLEST_CARD < value < _SMALLEST_CARD
        ):
            if len(self._clean) >= _CLEAN_CACHE_MAX:
                self._clean.clear()
            self._clean.add(value)

    def _splice(self, text: str, spans: list[tuple[int, int, str]]) -> str:
        spans.sort()
        pieces: list[str] = []
        position = 0
        for start, end, strategy in spans:
            if end <= position:
                continue
            start = max(start, position)
            pieces.append(text[position:start])
            replaced = self._replacement(strategy, text[start:end])
            pieces.append("" if replaced is _DROP or strategy == "drop" else replaced)
            position = end
        pieces.append(text[position:])
        return "".join(pieces)

    @staticmethod
    def _classify_literal(found: str) -> tuple[str, int, int] | None:
        """(detector, characters kept at the start, at the end) for a match of the literal-led regex."""
        first = found[0]
        if found.startswith("eyJ"):
            return "jwt", 0, 0
        if found.startswith("://"):
            colon = found.index(":", 3)
            return "url_password", colon + 1, 1
        if first == "-":
            return "pem", 0, 0
        if first in "Bb":
            scheme, _, token = found.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer":
                return ("bearer", len(found) - len(token), 0) if _looks_like_token(token) else None
            return ("basic", len(found) - len(token), 0) if _looks_like_basic_credentials(token) else None
        if found.startswith(("AIza", "ya29")):
            return "gcp", 0, 0
        if first == "A":
            return "aws", 0, 0
        if first == "g":
            return "github", 0, 0
        if first in "xh":
            return "slack", 0, 0
        return "stripe", 0, 0

    def redact_number(self, value: int) -> Any:
        """A card number passed as an integer is a card number all the same."""
        if "card" in self.detectors and _SMALLEST_CARD <= abs(value) < 10**19 and is_card_number(str(abs(value))):
            return self._replacement(self.detectors["card"], str(value))
        return None

    def redact_value(self, value: Any, path: str, touched: list[str], depth: int = 0) -> Any:
        """The redacted form of any AnyValue (None when unchanged), appending the touched paths."""
        kind = type(value)
        if kind is bool or kind is float or value is None:
            return None
        if kind is str:
            result = self.redact_text(value)
        elif kind is int:
            result = self.redact_number(value)
        elif kind is bytes:
            result = None if self.redact_text(value.decode("latin-1")) is None else MASK
        elif depth > 32:
            result = MASK
        else:
            return self._redact_container(value, path, touched, depth)
        if result is not None:
            touched.append(path)
        return result

    def _redact_container(self, value: Any, path: str, touched: list[str], depth: int) -> Any:
        if type(value) is dict or isinstance(value, Mapping):
            changes = self.changes_in(value, path + ".", _NESTED, touched, depth)
            return None if changes is None else _with_changes(value, changes)
        if isinstance(value, (list, tuple)):
            items: list[Any] | None = None
            for index, item in enumerate(value):
                if self.skips(item):
                    continue
                new = self.guarded(item, f"{path}[{index}]", touched, depth)
                if new is not None:
                    if items is None:
                        items = list(value)
                    items[index] = new
            return items
        return MASK

    def changes_in(
        self, mapping: Mapping[str, Any], prefix: str, where: str, touched: list[str], depth: int = 0
    ) -> dict[str, Any] | None:
        """{key: replacement (or _DROP)} for the entries of `mapping` that need redaction; None when none do.

        Maps with the same keys (every record of one shape) share a plan: which keys to skip, to redact whole,
        to walk as containers, and to check as scalars. The scalars are checked in bulk against the set of values
        already known to be clean (one C-level set difference), so only values never seen before are inspected.
        """
        keys = tuple(mapping)
        plan = self._plans[where].get(keys) or self._plan(keys, mapping, where)
        scalar_keys, get_scalars, container_keys, strategy_keys = plan
        changes: dict[str, Any] | None = None
        if get_scalars is not None:
            values = get_scalars(mapping)
            try:
                unknown = set(values).difference(self._clean)
            except TypeError:  # an unhashable value where this shape had a scalar: check key by key
                unknown = None
            if unknown is None:
                for key in scalar_keys:
                    new = self.guarded(mapping[key], prefix + key, touched, depth)
                    if new is not None:
                        changes = changes or {}
                        changes[key] = new
            elif unknown:
                changes = self._check_unknown(unknown, mapping, scalar_keys, prefix, touched, depth)
        for key in container_keys:
            value = mapping[key]
            if type(value) is dict and depth < 32:  # the common nested map, without the generic dispatch
                try:
                    inner = self.changes_in(value, prefix + key + ".", _NESTED, touched, depth + 1)
                except Exception:  # noqa: BLE001 - fail closed: mask what could not be inspected
                    new = self._failed(prefix + key, touched)
                else:
                    if inner is None:
                        continue
                    new = _with_changes(value, inner)
            else:
                new = self.guarded(value, prefix + key, touched, depth)
                if new is None:
                    continue
            changes = changes or {}
            changes[key] = new
        for key, strategy in strategy_keys:
            changes = changes or {}
            changes[key] = self.apply(strategy, mapping[key])
            touched.append(prefix + key)
        return changes

    def _check_unknown(
        self, unknown: set[Any], mapping: Mapping[str, Any], scalar_keys: tuple[str, ...], prefix: str,
        touched: list[str], depth: int,
    ) -> dict[str, Any] | None:
        """Inspect values not known to be clean; remember the clean ones, map the others back to their keys."""
        changes: dict[str, Any] | None = None
        surely_clean = self.surely_clean
        clean = self._clean
        shortest = self.min_secret_len
        for value in unknown:
            if type(value) is str and (
                len(value) < shortest or (len(value) <= self.max_scan_chars and surely_clean(value))
            ):
                if len(value) <= _CACHEABLE_LEN:
                    if len(clean) >= _CLEAN_CACHE_MAX:
                        clean.clear()
                    clean.add(value)
                continue
            if type(value) is str:
                candidates: Iterable[Any] = (value,)
            else:  # equal numbers of different types (10**15 == 1e15) share one set entry: check each type
                candidates = {type(mapping[key]): mapping[key] for key in scalar_keys if mapping[key] == value}.values()
            for candidate in candidates:
                found: list[str] = []
                new = self.guarded(candidate, "", found, depth)
                if new is None:
                    if type(candidate) is not str:  # redact_text remembers clean strings itself
                        self._remember_clean(candidate)
                    continue
                for key in scalar_keys:
                    current = mapping[key]
                    if current == candidate and type(current) is type(candidate):
                        changes = changes or {}
                        changes[key] = new
                        # a list attribute reports the items it changed (`user.roles[1]`), anything else the key
                        below = [prefix + key + path for path in found if path]
                        touched.extend(below or (prefix + key,))
        return changes

    def _plan(self, keys: tuple[str, ...], mapping: Mapping[str, Any], where: str) -> tuple[Any, ...]:
        """How to check maps with these keys; containers are the keys whose value is a map or list right now."""
        scalar_keys, container_keys, strategy_keys = [], [], []
        for key in keys:
            decision = self.key_decision(key, where)
            if decision == _SKIP:
                continue
            if decision != _SCAN:
                strategy_keys.append((key, decision))
            elif isinstance(mapping[key], (Mapping, list)):
                container_keys.append(key)
            else:
                scalar_keys.append(key)
        if not scalar_keys:
            get_scalars = None
        elif len(scalar_keys) == 1:
            only = scalar_keys[0]
            get_scalars = lambda values: (values[only],)
        else:
            get_scalars = operator.itemgetter(*scalar_keys)
        plan = (tuple(scalar_keys), get_scalars, tuple(container_keys), tuple(strategy_keys))
        plans = self._plans[where]
        if len(plans) >= _PLANS_MAX:
            plans.clear()
        plans[keys] = plan
        return plan

    def is_clean(self, attributes: Mapping[str, Any]) -> bool:
        """True when nothing in a record's attributes (nested maps and lists included) needs redaction: the emit
        fast path, which only reads. Conservative: False means "run changes_in", never "something is there".

        Maps with the same keys share a plan that knows the form each key's value had: text, a timestamp, another
        scalar, or a container. Every value is still verified on every record: the texts of the whole record are
        joined and pre-screened once (surely_clean), timestamps by their digit shape, other scalars against the
        values already found clean. When a value has another form this time, the values are checked one by one
        (values_clean). A broken mapping may raise; the processor then takes the full path.
        """
        if not attributes:
            return True
        if _compiled_attributes_clean is not None and type(attributes) is dict:
            verdict = _compiled_attributes_clean(attributes, self._screen_config)
            if verdict is not None:  # None: a key without a cached decision, which the path below fills in
                return verdict
        texts: list[str] = []
        try:
            if self._forms_clean(attributes, _ATTRIBUTE, texts, 0):
                # One pre-screen of all the texts: cheaper than a cache lookup per text (hashing fresh strings).
                joined = "/".join(texts)  # `/` separates as the ends of a string do, for every pre-screen test
                if len(joined) <= self.max_scan_chars and self.surely_clean(joined):
                    return True
        except TypeError:  # a value of another type than this shape had (not a string, not hashable)
            pass
        except KeyError:  # maps of the same size but other keys than the plans found by size: look them up again
            for plans in self._form_plans.values():
                plans.clear()
        plan = self._form_plan(attributes, _ATTRIBUTE)
        get_values, sensitive = plan[5], plan[6]
        return not sensitive and (get_values is None or self.values_clean(get_values(attributes)))

    def _forms_clean(self, mapping: Mapping[str, Any], where: str, texts: list[str], depth: int) -> bool:
        """Check `mapping` against the plan for its size, collecting its texts into `texts` for one pre-screen.

        The plan's getters confirm the keys: a map of the same size holds the same keys exactly when none of them
        is missing (KeyError otherwise), attribute keys left unchecked (trusted, exempt) included.
        """
        plan = self._form_plans[where].get(len(mapping))
        if plan is None or plan[8] not in mapping:  # another shape of this size (its last key is a cheap tell)
            plan = self._form_plan(mapping, where)
        _, get_texts, timestamp_keys, get_known, container_keys, _, sensitive, get_skipped, _ = plan
        if sensitive:
            return False
        if get_skipped is not None:
            get_skipped(mapping)
        if get_texts is not None:
            texts.extend(get_texts(mapping))
        for key in timestamp_keys:
            value = mapping[key]
            if type(value) is not str or value.encode().translate(_DIGIT_SHAPE) not in _TIMESTAMP_SHAPES:
                return False
        if get_known is not None and not self._clean.issuperset(get_known(mapping)):
            return False
        for key in container_keys:
            value = mapping[key]
            kind = type(value)
            if kind is dict:
                if value and (depth >= 32 or not self._forms_clean(value, _NESTED, texts, depth + 1)):
                    return False
            elif kind is list or kind is tuple:
                texts.extend(value)  # strings are pre-screened, anything else fails the join (TypeError)
            else:
                return False
        return True

    def _form_plan(self, mapping: Mapping[str, Any], where: str) -> tuple[Any, ...]:
        """The plan for maps with these keys: (key set, getter of texts, timestamp keys, getter of other scalars,
        container keys, getter of every value to check, whether a key rule applies to one of the keys, getter of
        the keys left unchecked, last key); kept by size for _forms_clean and by keys. Only for non-empty maps."""
        keys = tuple(mapping)
        by_keys = self._form_plans_by_keys[where]
        plan = by_keys.get(keys)
        if plan is None:
            scalar_keys, _, container_keys, strategy_keys = self._plans[where].get(keys) or self._plan(
                keys, mapping, where
            )
            texts, stamps, known = [], [], []
            for key in scalar_keys:
                value = mapping[key]
                if type(value) is not str:
                    known.append(key)
                elif self.surely_clean(value):
                    is_stamp = value.encode("utf-8", "surrogatepass").translate(_DIGIT_SHAPE) in _TIMESTAMP_SHAPES
                    (stamps if is_stamp else texts).append(key)
                else:
                    known.append(key)
            checked = set(scalar_keys) | set(container_keys) | {key for key, _ in strategy_keys}
            plan = (
                frozenset(keys), _getter(texts), tuple(stamps), _getter(known), container_keys,
                _getter(scalar_keys + container_keys), bool(strategy_keys),
                _getter([key for key in keys if key not in checked]), keys[-1],
            )
            if len(by_keys) >= _PLANS_MAX:
                by_keys.clear()
            by_keys[keys] = plan
        plans = self._form_plans[where]
        if len(plans) >= _PLANS_MAX:
            plans.clear()
        plans[len(keys)] = plan
        return plan

    def body_clean(self, body: Any) -> bool:
        """Whether nothing in a record's body needs redaction; conservative, like is_clean."""
        if _compiled_value_clean is not None:
            verdict = _compiled_value_clean(body, self._screen_config)
            if verdict is not None:
                return verdict
        return self.values_clean((body,))

    def values_clean(self, values: Iterable[Any], depth: int = 0) -> bool:
        """Whether no rule applies to any of these values or inside them (keys of nested maps included); clean
        strings are remembered. Conservative, like is_clean."""
        clean = self._clean
        shortest = self.min_secret_len
        for value in values:
            kind = type(value)
            if kind is str:
                if value in clean:
                    continue
                length = len(value)
                if length < shortest:
                    continue
                if length > self.max_scan_chars or not self.surely_clean(value):
                    return False
                if length <= _CACHEABLE_LEN:
                    if len(clean) >= _CLEAN_CACHE_MAX:
                        clean.clear()
                    clean.add(value)
            elif kind is dict:
                if depth >= 32 or not (self._scanned_keys.issuperset(value) or self._keys_scanned(value)):
                    return False
                if not self.values_clean(value.values(), depth + 1):
                    return False
            elif kind is list or kind is tuple:
                if depth >= 32 or not self.values_clean(value, depth + 1):
                    return False
            elif kind is int or kind is float or kind is bool or value is None:
                if value is not None and not -_SMALLEST_CARD < value < _SMALLEST_CARD:
                    return False
                if len(clean) >= _CLEAN_CACHE_MAX:
                    clean.clear()
                clean.add(value)  # small numbers, flags and None, so that plans find them known
            else:
                return False
        return True

    def _keys_scanned(self, mapping: Mapping[str, Any]) -> bool:
        """Whether every key of a nested map is one whose value is only scanned; such keys are remembered."""
        for key in mapping:
            if type(key) is not str or self.key_decision(key, _NESTED) != _SCAN:
                return False
        if len(self._scanned_keys) >= _CLEAN_CACHE_MAX:
            self._scanned_keys.clear()
        self._scanned_keys.update(mapping)
        return True

    def skips(self, value: Any) -> bool:
        """Whether a value certainly needs no work: a short or known-clean string, a small number, a bool, None.

        The hot loops call this first, so the common values never pay for building a path or a call chain.
        """
        kind = type(value)
        if kind is str:
            return len(value) < self.min_secret_len or value in self._clean
        if kind is int:
            return -_SMALLEST_CARD < value < _SMALLEST_CARD
        return kind is bool or kind is float or value is None

    def guarded(self, value: Any, path: str, touched: list[str], depth: int = -1) -> Any:
        """redact_value for one value below the record; a failure masks that value (fail closed) and is counted."""
        try:
            kind = type(value)
            if kind is str:
                new = self.redact_text(value)
                if new is not None:
                    touched.append(path)
                return new
            if (kind is dict or kind is list or kind is tuple) and depth < 32:
                return self._redact_container(value, path, touched, depth + 1)
            return self.redact_value(value, path, touched, depth + 1)
        except Exception:  # noqa: BLE001 - fail closed: never pass through a value we could not inspect
            return self._failed(path, touched)

    @staticmethod
    def _failed(path: str, touched: list[str]) -> str:
        """Fail closed: the value at `path` is replaced by the mask, and the failure is counted."""
        STATS.increment("processor_errors")
        touched.append(path)
        return MASK


class RedactionProcessor(LogRecordProcessor):
    """Redact secrets and PII in place in every record, then hand it to `next_processor` (when given).

    Standalone (no next processor) it mutates records for the processors registered after it on a provider.
    """

    def __init__(self, config: RedactionConfig | None = None, next_processor: LogRecordProcessor | None = None) -> None:
        self.redactor = Redactor(config)
        self.next_processor = next_processor
        self._misses = 0  # records in a row the fast path could not clear (see on_emit)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        misses = self._misses
        if misses < _FAST_PATH_TRIES:
            try:
                # BoundedAttributes answers reads through Python-level methods; its backing dict is the hot path.
                attributes = record.attributes
                readable = getattr(attributes, "_dict", attributes)
                body = record.body
                clean = (readable is None or self.redactor.is_clean(readable)) and (
                    body is None or self.redactor.body_clean(body)
                )
            except Exception:  # noqa: BLE001 - anything unusual takes the full path, which fails closed
                clean = False
            self._misses = 0 if clean else misses + 1
        else:
            # Records that keep needing redaction (an email in every record with email detection on) skip the fast
            # path for a while instead of paying for it and then for the full path; it is tried again afterwards.
            clean = False
            self._misses = 0 if misses >= _FAST_PATH_TRIES + _FAST_PATH_PAUSE else misses + 1
        if not clean:
            try:
                self._redact(record)
            except Exception:  # noqa: BLE001 - fail closed: scrub the record rather than pass a secret or raise
                STATS.increment("processor_errors")
                self._scrub(record)
        if self.next_processor is not None:
            self.next_processor.on_emit(log_record)

    def direct_stage(self, logger: Any) -> Callable[..., bool] | None:
        """This stage of the chain's direct path (see AuditLogger._emit_record): a record with nothing to redact
        goes on to the next stage's; any other answers False and takes on_emit, which redacts it."""
        following = getattr(self.next_processor, "direct_stage", None)
        next_stage = None if following is None else following(logger)
        if next_stage is None:
            return None
        if _CompiledRedactionStage is not None:  # the function below, compiled
            return _CompiledRedactionStage(self, next_stage, Redactor.is_clean, _FAST_PATH_TRIES)

        def redaction_stage(
            timestamp: int, observed: int, severity_number: Any, severity_text: str, attributes: dict[str, Any],
            event_name: str, trace_id: int, span_id: int, trace_flags: int,
        ) -> bool:
            if self._misses >= _FAST_PATH_TRIES:
                return False  # on_emit's pause after records that kept needing redaction
            try:
                if not self.redactor.is_clean(attributes):  # read per record, as on_emit reads it
                    return False
            except Exception:  # noqa: BLE001 - as in on_emit: anything unusual takes the full path
                return False
            self._misses = 0
            return next_stage(
                timestamp, observed, severity_number, severity_text, attributes, event_name, trace_id, span_id,
                trace_flags,
            )

        return redaction_stage

    def _redact(self, record: Any) -> None:
        attributes = record.attributes
        touched: list[str] = []
        updates: dict[str, Any] | None = None
        # BoundedAttributes answers reads through Python-level methods; reading its backing dict (when present) is
        # the measured hot path. Writes below go through the public mapping interface.
        readable = getattr(attributes, "_dict", attributes)
        if readable:
            updates = self.redactor.changes_in(readable, "", _ATTRIBUTE, touched)
        body = record.body
        if body is not None:
            new_body = self.redactor.guarded(body, "body", touched)
            if new_body is not None:
                record.body = None if new_body is _DROP else new_body
        if updates:
            for key, new in updates.items():
                if new is _DROP:
                    del attributes[key]
                else:
                    attributes[key] = new
        if touched:
            previous = attributes.get(semconv.AUDIT_REDACTED) if attributes is not None else None
            trail = list(previous or ()) + sorted(set(touched))
            if attributes is None:
                record.attributes = {semconv.AUDIT_REDACTED: trail}
            else:
                attributes[semconv.AUDIT_REDACTED] = trail

    def _scrub(self, record: Any) -> None:
        """Last resort after an unexpected failure: keep only trusted attributes and mark the record scrubbed."""
        attributes = record.attributes
        try:
            if attributes is not None:
                for key in list(attributes):
                    if key not in TRUSTED_KEYS:
                        del attributes[key]
                attributes[semconv.AUDIT_REDACTED] = ["*"]
        except Exception:  # noqa: BLE001 - attributes unusable: replace them wholesale
            record.attributes = {semconv.AUDIT_REDACTED: ["*"]}
        record.body = None

    def shutdown(self) -> None:
        if self.next_processor is not None:
            self.next_processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self.next_processor is None else self.next_processor.force_flush(timeout_millis)
