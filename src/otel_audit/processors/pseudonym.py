"""GDPR pseudonyms: replace personal fields by stable keyed pseudonyms, with an erasable vault.

`user.email` and `user.name` (and `client.address` when configured) become `psn_...`: an HMAC-SHA256 of the value
under a configured key, so one person's events still group together while the audit log holds no direct identifier.

The optional vault (a SQLite file) maps pseudonym -> original, each original encrypted with AES-256-GCM under a
key of its own data subject (the record's `user.id`, else the value itself). `forget(subject)` deletes that key:
every mapping of the subject becomes unrecoverable while the audit records stay byte-identical (crypto-shredding),
and hash chains over them stay valid. `reveal(pseudonym)` returns the original while the key exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from .. import semconv
from ..config import ConfigurationError
from ..stats import STATS

KEY_ENV = "OTEL_AUDIT_PSEUDONYM_KEY"
VAULT_ENV = "OTEL_AUDIT_PSEUDONYM_VAULT"
PREFIX = "psn_"
DEFAULT_FIELDS = (semconv.USER_EMAIL, semconv.USER_NAME)
_CACHE_MAX = 8192


class PseudonymError(ConfigurationError):
    """The pseudonymization configuration is invalid (no key, unknown option)."""


class PseudonymNotFound(KeyError):
    """The vault holds no mapping for this pseudonym (or there is no vault)."""


class SubjectForgotten(PseudonymNotFound):
    """The pseudonym's data subject was forgotten: its key is gone, the original cannot be recovered."""


def _as_key(key: bytes | str | None, source: str) -> bytes:
    if key is None or key == "" or key == b"":
        raise PseudonymError(f"pseudonymization: {source} is required (a secret of at least 16 bytes)")
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < 16:
        raise PseudonymError(f"pseudonymization: {source} must be at least 16 bytes, got {len(raw)}")
    return raw


def pseudonym_for(key: bytes, value: str, prefix: str = PREFIX) -> str:
    """The stable pseudonym of `value` under `key`: prefix + 26 base32 characters of HMAC-SHA256 (128 bits)."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()[:16]
    return prefix + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


class PseudonymVault:
    """pseudonym -> original, encrypted per data subject, in a SQLite file shared safely between processes."""

    def __init__(self, path: str | os.PathLike[str], key: bytes | str) -> None:
        self.path = Path(path)
        self._key = _as_key(key, "vault key")
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The vault holds the subjects' keys: owner-only from the start (SQLite gives its WAL files the same mode).
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._open()

    def _open(self) -> None:
        """(Re)open the database: at start, and in a forked child, which must not use its parent's connection."""
        self._pid = os.getpid()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted keys are overwritten in the file, not just unlinked
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS subjects (subject_ref TEXT PRIMARY KEY, data_key BLOB NOT NULL,"
                " created_ns INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS mappings (pseudonym TEXT PRIMARY KEY, subject_ref TEXT NOT NULL,"
                " nonce BLOB NOT NULL, ciphertext BLOB NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS mappings_subject ON mappings (subject_ref)")

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._open()
        return self._db

    def _subject_ref(self, subject: str) -> str:
        """Subjects are stored as keyed hashes, so the vault file itself does not list who is in it."""
        return hmac.new(self._key, b"subject\x00" + subject.encode("utf-8"), hashlib.sha256).hexdigest()

    def store(self, pseudonym: str, original: str, subject: str) -> None:
        """Record pseudonym -> original under the subject's key (created on first use)."""
        ref = self._subject_ref(subject)
        db = self._connection()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT data_key FROM subjects WHERE subject_ref = ?", (ref,)).fetchone()
                if row is None:
                    data_key = AESGCM.generate_key(bit_length=256)
                    db.execute(
                        "INSERT INTO subjects (subject_ref, data_key, created_ns) VALUES (?, ?, ?)",
                        (ref, data_key, time.time_ns()),
                    )
                else:
                    data_key = row[0]
                nonce = os.urandom(12)
                ciphertext = AESGCM(data_key).encrypt(nonce, original.encode("utf-8"), pseudonym.encode("ascii"))
                db.execute(
                    "INSERT OR REPLACE INTO mappings (pseudonym, subject_ref, nonce, ciphertext) VALUES (?, ?, ?, ?)",
                    (pseudonym, ref, nonce, ciphertext),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def reveal(self, pseudonym: str) -> str:
        """The original value; raises SubjectForgotten after forget(), PseudonymNotFound when never stored."""
        db = self._connection()
        with self._lock:
            row = db.execute(
                "SELECT m.nonce, m.ciphertext, s.data_key FROM mappings m"
                " LEFT JOIN subjects s ON s.subject_ref = m.subject_ref WHERE m.pseudonym = ?",
                (pseudonym,),
            ).fetchone()
        if row is None:
            raise PseudonymNotFound(pseudonym)
        nonce, ciphertext, data_key = row
        if data_key is None:
            raise SubjectForgotten(pseudonym)
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, pseudonym.encode("ascii")).decode("utf-8")
        except InvalidTag:
            raise SubjectForgotten(pseudonym) from None

    def forget(self, subject: str) -> bool:
        """Delete the subject's key (crypto-shredding); True when there was one. Mappings stay, unreadable."""
        ref = self._subject_ref(subject)
        db = self._connection()
        with self._lock:
            deleted = db.execute("DELETE FROM subjects WHERE subject_ref = ?", (ref,)).rowcount
            # Move the overwritten page out of the write-ahead log too, so no copy of the key stays on disk.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted > 0

    def close(self) -> None:
        """Close this process's connection (a forked child leaves its parent's connection alone)."""
        with self._lock:
            if self._pid == os.getpid():
                self._db.close()


@dataclass(frozen=True)
class PseudonymConfig:
    """Pseudonymization settings: `key` (or OTEL_AUDIT_PSEUDONYM_KEY), the attribute `fields`, an optional
    `vault` (a path, a PseudonymVault, or OTEL_AUDIT_PSEUDONYM_VAULT), and the attribute naming the data subject."""

    key: bytes | str | None = None
    fields: Iterable[str] = DEFAULT_FIELDS
    vault: str | os.PathLike[str] | PseudonymVault | None = None
    subject_attribute: str = semconv.USER_ID
    prefix: str = PREFIX

    @classmethod
    def from_setting(cls, setting: Any) -> PseudonymConfig | None:
        """AuditSettings.pseudonymization: None/False (off), True (key and vault from the environment), a mapping
        of PseudonymConfig fields, or a PseudonymConfig."""
        if setting is None or setting is False:
            return None
        if setting is True:
            return cls()
        if isinstance(setting, cls):
            return setting
        if isinstance(setting, Mapping):
            unknown = sorted(set(setting) - set(cls.__dataclass_fields__))
            if unknown:
                raise PseudonymError(f"pseudonymization: unknown option {unknown[0]!r}")
            return cls(**setting)
        raise PseudonymError(
            f"pseudonymization: expected True, a mapping or PseudonymConfig, got {type(setting).__name__}"
        )


class Pseudonymizer:
    """Computes pseudonyms and keeps the vault in step; `reveal` and `forget` are the data-subject operations."""

    def __init__(self, config: PseudonymConfig) -> None:
        key_source = "key" if config.key is not None else KEY_ENV
        self.key = _as_key(config.key if config.key is not None else os.environ.get(KEY_ENV), key_source)
        if isinstance(config.fields, str):
            raise PseudonymError("pseudonymization: fields must be a list of attribute names, not one string")
        self.fields = tuple(config.fields)
        self.subject_attribute = config.subject_attribute
        self.prefix = config.prefix
        vault = config.vault if config.vault is not None else os.environ.get(VAULT_ENV) or None
        self.owns_vault = vault is not None and not isinstance(vault, PseudonymVault)
        self.vault: PseudonymVault | None = (
            vault if vault is None or isinstance(vault, PseudonymVault) else PseudonymVault(vault, self.key)
        )
        self._pseudonyms: dict[str, str] = {}
        self._stored: set[tuple[str, str]] = set()

    def pseudonym(self, value: str) -> str:
        """The pseudonym of a value (cached)."""
        found = self._pseudonyms.get(value)
        if found is None:
            found = pseudonym_for(self.key, value, self.prefix)
            if len(self._pseudonyms) >= _CACHE_MAX:
                self._pseudonyms.clear()
            self._pseudonyms[value] = found
        return found

    def remember(self, pseudonym: str, original: str, subject: str) -> None:
        """Store the mapping in the vault once per process (no vault: nothing to do)."""
        if self.vault is None or (pseudonym, subject) in self._stored:
            return
        self.vault.store(pseudonym, original, subject)
        if len(self._stored) >= _CACHE_MAX:
            self._stored.clear()
        self._stored.add((pseudonym, subject))

    def reveal(self, pseudonym: str) -> str:
        """The original behind a pseudonym; PseudonymNotFound without a vault or mapping, SubjectForgotten after forget."""
        if self.vault is None:
            raise PseudonymNotFound(f"{pseudonym} (no vault configured: pseudonyms are one-way)")
        return self.vault.reveal(pseudonym)

    def forget(self, subject: str) -> bool:
        """Crypto-shred a data subject (their `user.id`, or the value itself for records without one)."""
        if self.vault is None:
            raise PseudonymNotFound(f"{subject} (no vault configured: there is nothing to forget)")
        self._stored.clear()
        return self.vault.forget(subject)


class PseudonymProcessor(LogRecordProcessor):
    """Replace the configured attributes by pseudonyms in place, then hand the record to `next_processor`.

    The original never leaves the process in clear: if the vault cannot be written, the pseudonym is still applied
    (that mapping is then not revealable) and the failure counted in `processor_errors`.
    """

    def __init__(self, config: PseudonymConfig, next_processor: LogRecordProcessor | None = None) -> None:
        self.pseudonymizer = Pseudonymizer(config)
        self.next_processor = next_processor

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        attributes: Any = log_record.log_record.attributes  # BoundedAttributes or a plain dict, both writable
        if attributes:
            pseudonymizer = self.pseudonymizer
            subject_value = attributes.get(pseudonymizer.subject_attribute)
            for field_name in pseudonymizer.fields:
                original = attributes.get(field_name)
                if type(original) is not str or original.startswith(pseudonymizer.prefix):
                    continue
                try:
                    pseudonym = pseudonymizer.pseudonym(original)
                except Exception:  # noqa: BLE001 - fail closed: the original must not be exported
                    STATS.increment("processor_errors")
                    attributes[field_name] = "[REDACTED]"
                    continue
                attributes[field_name] = pseudonym
                subject = subject_value if isinstance(subject_value, str) and subject_value else original
                try:
                    pseudonymizer.remember(pseudonym, original, subject)
                except Exception:  # noqa: BLE001 - the event is still delivered, pseudonymized
                    STATS.increment("processor_errors")
        if self.next_processor is not None:
            self.next_processor.on_emit(log_record)

    def reveal(self, pseudonym: str) -> str:
        """See Pseudonymizer.reveal."""
        return self.pseudonymizer.reveal(pseudonym)

    def forget(self, subject: str) -> bool:
        """See Pseudonymizer.forget."""
        return self.pseudonymizer.forget(subject)

    def shutdown(self) -> None:
        if self.next_processor is not None:
            self.next_processor.shutdown()
        if self.pseudonymizer.owns_vault and self.pseudonymizer.vault is not None:
            self.pseudonymizer.vault.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self.next_processor is None else self.next_processor.force_flush(timeout_millis)
