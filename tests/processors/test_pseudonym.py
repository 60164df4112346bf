"""Pseudonyms: stable across processes under one key, erasable through the vault (crypto-shredding)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import otel_audit
from otel_audit import semconv
from otel_audit.processors import (
    PseudonymNotFound,
    PseudonymProcessor,
    PseudonymVault,
    SubjectForgotten,
    iter_chain,
)
from otel_audit.processors.pseudonym import PseudonymError, pseudonym_for
from otel_audit.testing import AuditCapture

KEY = "pseudonym-key-for-tests-0123456789"
OTHER_KEY = "another-pseudonym-key-9876543210"

EMIT_IN_CHILD = textwrap.dedent(
    """
    import json, sys
    import otel_audit
    from otel_audit.testing import AuditCapture
    key, vault = sys.argv[1], sys.argv[2] or None
    capture = AuditCapture()
    otel_audit.configure(delivery_processor=capture, pseudonymization={"key": key, "vault": vault})
    otel_audit.get_audit_logger("child").emit(
        "user.login", actor={"id": "u-7", "email": "ann@example.com", "name": "Ann Example"})
    otel_audit.shutdown()
    attributes = capture.attributes[0]
    print(json.dumps([attributes["user.email"], attributes["user.name"]]))
    """
)


def pseudonyms_from_child(key: str, vault: Path | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", EMIT_IN_CHILD, key, str(vault or "")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def pseudonymizer(pipeline: otel_audit.AuditPipeline | None) -> PseudonymProcessor:
    assert pipeline is not None
    return next(stage for stage in iter_chain(pipeline.chain) if isinstance(stage, PseudonymProcessor))


def test_stable_across_processes_with_the_same_key_and_different_with_another() -> None:
    first = pseudonyms_from_child(KEY)
    second = pseudonyms_from_child(KEY)
    other = pseudonyms_from_child(OTHER_KEY)
    assert first == second
    assert first == [pseudonym_for(KEY.encode(), "ann@example.com"), pseudonym_for(KEY.encode(), "Ann Example")]
    assert all(value.startswith("psn_") and len(value) == 30 for value in first)
    assert other[0] != first[0] and other[1] != first[1]


def test_default_fields_replaced_other_attributes_untouched(capture_pipeline) -> None:
    capture = capture_pipeline(pseudonymization={"key": KEY})
    otel_audit.get_audit_logger("t").emit(
        "user.login", actor={"id": "u-1", "email": "bob@example.com", "name": "Bob"}, client_address="203.0.113.9"
    )
    attributes = capture.attributes[0]
    assert attributes[semconv.USER_EMAIL] == pseudonym_for(KEY.encode(), "bob@example.com")
    assert attributes[semconv.USER_NAME] == pseudonym_for(KEY.encode(), "Bob")
    assert attributes[semconv.USER_ID] == "u-1"
    assert attributes[semconv.CLIENT_ADDRESS] == "203.0.113.9"  # off by default, configurable:

    capture = capture_pipeline(pseudonymization={"key": KEY, "fields": [semconv.CLIENT_ADDRESS]})
    otel_audit.get_audit_logger("t").emit("user.login", actor={"id": "u-1", "email": "bob@example.com"}, client_address="203.0.113.9")
    attributes = capture.attributes[0]
    assert attributes[semconv.CLIENT_ADDRESS] == pseudonym_for(KEY.encode(), "203.0.113.9")
    assert attributes[semconv.USER_EMAIL] == "bob@example.com"


def test_pseudonymized_fields_are_not_masked_by_pii_redaction(capture_pipeline) -> None:
    capture = capture_pipeline(pseudonymization={"key": KEY}, redaction={"detectors": {"email": True}})
    otel_audit.get_audit_logger("t").emit(
        "user.login", actor={"id": "u-1", "email": "bob@example.com"}, metadata={"cc": "bob@example.com"}
    )
    attributes = capture.attributes[0]
    assert attributes[semconv.USER_EMAIL] == pseudonym_for(KEY.encode(), "bob@example.com")
    assert attributes[semconv.AUDIT_METADATA] == {"cc": "[REDACTED]"}


def test_reveal_and_forget_with_the_vault(tmp_path: Path, capture_pipeline) -> None:
    vault_path = tmp_path / "vault.sqlite"
    capture = capture_pipeline(pseudonymization={"key": KEY, "vault": str(vault_path)})
    pipeline = otel_audit.current_pipeline()
    logger = otel_audit.get_audit_logger("t")
    logger.emit("user.login", actor={"id": "u-1", "email": "ann@example.com", "name": "Ann"})
    logger.emit("user.login", actor={"id": "u-2", "email": "bob@example.com"})
    logger.emit("user.logout", actor={"id": "u-1", "email": "ann@example.com"})
    ann_email, ann_name = capture.attributes[0][semconv.USER_EMAIL], capture.attributes[0][semconv.USER_NAME]
    bob_email = capture.attributes[1][semconv.USER_EMAIL]
    assert capture.attributes[2][semconv.USER_EMAIL] == ann_email  # one person's events still group together
    stored_before = json.dumps(capture.attributes, sort_keys=True).encode()

    processor = pseudonymizer(pipeline)
    assert processor.reveal(ann_email) == "ann@example.com"
    assert processor.reveal(ann_name) == "Ann"
    with sqlite3.connect(vault_path) as db:
        (ann_key,) = db.execute("SELECT data_key FROM subjects").fetchall()[0]
        assert db.execute("SELECT count(*) FROM subjects").fetchone() == (2,)
    vault_files = sorted(tmp_path.glob("vault.sqlite*"))
    assert not any(b"ann@example.com" in file.read_bytes() for file in vault_files)  # originals only encrypted
    assert any(ann_key in file.read_bytes() for file in vault_files)  # the key is on disk until forgotten

    # An administrator process would do this with its own handle on the vault file:
    admin = PseudonymVault(vault_path, KEY)
    assert admin.forget("u-1") is True
    assert admin.forget("u-1") is False
    admin.close()

    with pytest.raises(SubjectForgotten):
        processor.reveal(ann_email)
    with pytest.raises(SubjectForgotten):
        processor.reveal(ann_name)
    assert processor.reveal(bob_email) == "bob@example.com"
    with pytest.raises(PseudonymNotFound):
        processor.reveal("psn_never_seen")
    assert json.dumps(capture.attributes, sort_keys=True).encode() == stored_before  # events untouched
    for file in tmp_path.glob("vault.sqlite*"):
        assert ann_key not in file.read_bytes(), file  # the key is gone from the file and its WAL
    with sqlite3.connect(vault_path) as db:
        assert db.execute("SELECT count(*) FROM mappings").fetchone() == (3,)  # ciphertexts remain, unreadable


def test_vault_files_are_owner_only(tmp_path: Path) -> None:
    vault = PseudonymVault(tmp_path / "vault.sqlite", KEY)
    vault.store("psn_x", "x@example.com", "u-x")
    files = sorted(tmp_path.glob("vault.sqlite*"))
    assert files and all(file.stat().st_mode & 0o077 == 0 for file in files), [oct(f.stat().st_mode) for f in files]
    vault.close()


def test_vault_is_shared_between_processes(tmp_path: Path) -> None:
    vault_path = tmp_path / "vault.sqlite"
    email_pseudonym, name_pseudonym = pseudonyms_from_child(KEY, vault_path)
    vault = PseudonymVault(vault_path, KEY)
    assert vault.reveal(email_pseudonym) == "ann@example.com"
    assert vault.reveal(name_pseudonym) == "Ann Example"
    vault.forget("u-7")
    with pytest.raises(SubjectForgotten):
        vault.reveal(email_pseudonym)
    vault.close()


def test_forked_child_uses_its_own_vault_connection(tmp_path: Path) -> None:
    vault = PseudonymVault(tmp_path / "vault.sqlite", KEY)
    vault.store("psn_parent", "parent@example.com", "u-parent")
    pid = os.fork()
    if pid == 0:  # child: store through the inherited object, then leave without running pytest's teardown
        code = 0
        try:
            vault.store("psn_child", "child@example.com", "u-child")
            vault.close()
        except BaseException:  # noqa: BLE001 - the child reports any failure through its exit code
            code = 1
        os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        pytest.fail("forked child did not finish")
    assert os.waitstatus_to_exitcode(status) == 0
    assert vault.reveal("psn_child") == "child@example.com"
    assert vault.reveal("psn_parent") == "parent@example.com"
    vault.close()


def test_without_a_vault_pseudonyms_are_one_way(capture_pipeline) -> None:
    capture_pipeline(pseudonymization={"key": KEY})
    processor = pseudonymizer(otel_audit.current_pipeline())
    with pytest.raises(PseudonymNotFound, match="no vault configured"):
        processor.reveal(pseudonym_for(KEY.encode(), "x"))
    with pytest.raises(PseudonymNotFound, match="no vault configured"):
        processor.forget("u-1")


def test_key_and_vault_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capture_pipeline) -> None:
    monkeypatch.setenv("OTEL_AUDIT_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("OTEL_AUDIT_PSEUDONYM_VAULT", str(tmp_path / "env-vault.sqlite"))
    capture = capture_pipeline(pseudonymization=True)
    otel_audit.get_audit_logger("t").emit("user.login", actor={"id": "u-3", "email": "cy@example.com"})
    pseudonym = capture.attributes[0][semconv.USER_EMAIL]
    assert pseudonymizer(otel_audit.current_pipeline()).reveal(pseudonym) == "cy@example.com"
    assert (tmp_path / "env-vault.sqlite").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({}, "OTEL_AUDIT_PSEUDONYM_KEY is required"),
        ({"key": "short"}, "key must be at least 16 bytes"),
        ({"key": KEY, "fields": "user.email"}, "fields must be a list"),
        ({"key": KEY, "salt": "x"}, "unknown option 'salt'"),
        ("on", "expected True, a mapping or PseudonymConfig"),
    ],
)
def test_bad_pseudonymization_settings_fail_at_configure(setting, message, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_AUDIT_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymError) as info:
        otel_audit.configure(delivery_processor=AuditCapture(), pseudonymization=setting)
    assert message in str(info.value)
