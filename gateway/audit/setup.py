"""Composition of the audit trail and the pseudonym key from the config (daemon and CLI)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

from gateway.audit.trail import AuditError, AuditFile, AuditTrail
from gateway.config import ConfigError, GatewayConfig, sqlite_dir
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

KEY_FILE_NAME: Final = "privacy.key"


def default_key_path(config: GatewayConfig) -> str | None:
    """Where the pseudonym key is kept when none is configured: beside the audit trail, or
    beside a SQLite store; None when there is no such place (a Redis store with no trail)."""
    if config.audit.path is not None:
        return os.path.join(os.path.dirname(config.audit.path) or ".", KEY_FILE_NAME)
    directory = sqlite_dir(config.store.url)
    return None if directory is None else os.path.join(directory, KEY_FILE_NAME)


def _read_or_create(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"privacy: cannot create the key file {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"privacy: cannot read the key file {path}: {exc.strerror}") from None
    if len(data) < 16:
        raise ConfigError(f"privacy: the key file {path} holds fewer than 16 bytes")
    return data


def configure_pseudonyms(config: GatewayConfig) -> str:
    """Set the key logs and the audit trail hash numbers with; returns where it came from
    ("privacy.key_file", a created default file, or "ephemeral"). ConfigError when a key is
    configured but cannot be read."""
    key = config.privacy.secret()
    source = "config"
    if key is None:
        path = default_key_path(config)
        if path is None or not os.path.isdir(os.path.dirname(path) or "."):
            # Pseudonyms then differ from one start to the next; logs say so (privacy_key).
            logs.set_pseudonyms(
                logs.Pseudonyms(secrets.token_bytes(32), config.privacy.show_digits)
            )
            return "ephemeral"
        key, source = _read_or_create(path), path
    logs.set_pseudonyms(logs.Pseudonyms(key, config.privacy.show_digits))
    return source


def open_trail(config: GatewayConfig, metrics: Metrics | None = None) -> AuditTrail | None:
    """The daemon's trail (not started), or None when ``[audit]`` names no file."""
    audit = config.audit
    if audit.path is None:
        return None
    return AuditTrail(
        AuditFile(audit.path, fsync=audit.fsync, instance=config.instance),
        metrics=metrics,
        refusal_burst=audit.refusal_burst,
        refusal_interval_s=audit.refusal_interval_s,
        head_interval_s=audit.head_log_interval_s,
    )


def open_file(config: GatewayConfig) -> AuditFile | None:
    """The staff tools' handle on the same file, opened (None when there is no trail)."""
    if config.audit.path is None:
        return None
    file = AuditFile(config.audit.path, fsync=config.audit.fsync, instance=config.instance)
    try:
        file.open()
    except AuditError:
        file.close()
        raise
    return file
