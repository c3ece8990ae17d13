"""Structured JSON logs: configuration, redaction and the catalogue of event names.

Event names are stable (a SIEM keys on them): add freely, never rename. Every event the
gateway logs is a constant here, so the catalogue in docs/LOGS.md can be checked against it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

# --- event catalogue --------------------------------------------------------------------------
# Process lifecycle
GATEWAY_STARTED: Final = "gateway_started"
GATEWAY_STOPPING: Final = "gateway_stopping"
GATEWAY_STOPPED: Final = "gateway_stopped"
CONFIG_RELOADED: Final = "config_reloaded"
CONFIG_RELOAD_FAILED: Final = "config_reload_failed"
LISTENER_STARTED: Final = "listener_started"
# Connections and sessions
CONNECTION_ACCEPTED: Final = "connection_accepted"
CONNECTION_REFUSED: Final = "connection_refused"
BIND_REQUESTED: Final = "bind_requested"
BIND_COMPLETED: Final = "bind_completed"
BIND_FAILED: Final = "bind_failed"
UPSTREAM_CONNECT_FAILED: Final = "upstream_connect_failed"
UNBIND_RECEIVED: Final = "unbind_received"
SESSION_CLOSED: Final = "session_closed"
# Protocol faults (the session answered by itself, or timed out)
PDU_REJECTED: Final = "pdu_rejected"
PDU_UNEXPECTED_RESPONSE: Final = "pdu_unexpected_response"
REQUEST_EXPIRED: Final = "request_expired"
FRAMING_FAILED: Final = "framing_failed"
CONNECTION_FAILED: Final = "connection_failed"
# Consent (compliance-relevant)
MT_REJECTED: Final = "mt_rejected"
MO_KEYWORD_MATCHED: Final = "mo_keyword_matched"
MO_DROPPED: Final = "mo_dropped"
MO_SENDER_IGNORED: Final = "mo_sender_ignored"
CONSENT_CHANGED: Final = "consent_changed"
AUTO_REPLY_SENT: Final = "auto_reply_sent"
AUTO_REPLY_SUPPRESSED: Final = "auto_reply_suppressed"
STORE_UNAVAILABLE: Final = "store_unavailable"
# The fail-closed store works again after a fault (its probe passed).
STORE_RECOVERED: Final = "store_recovered"
# The daemon created an empty SQLite consent store (first start).
STORE_CREATED: Final = "store_created"
STORE_INVALIDATIONS_LOST: Final = "store_invalidations_lost"
STORE_LISTENER_FAILED: Final = "store_listener_failed"
# Message text
MT_HOLD_EXPIRED: Final = "mt_hold_expired"
# An extra part added to carry a footer was refused by the SMSC after the client had its answer.
MT_PART_REFUSED: Final = "mt_part_refused"
# Simulator
SIM_MESSAGE_RECEIVED: Final = "sim_message_received"
SIM_MO_SENT: Final = "sim_mo_sent"
SIM_STARTED: Final = "sim_started"
SIM_STOPPED: Final = "sim_stopped"

# Fields never written to a log, whatever a caller passes (PRODUCT.md section 5).
SECRET_FIELDS: Final = frozenset({"password", "secret", "token", "bearer_token"})
BODY_FIELDS: Final = frozenset({"short_message", "message_payload", "text", "body", "words"})
REDACTED: Final = "[redacted]"


def mask_subscriber(digits: str) -> str:
    """A stable pseudonym for a number: correlatable across logs, not reversible by eye."""
    digest = hashlib.sha256(digits.encode()).hexdigest()[:12]
    return f"{digits[:3]}…{digits[-2:]}#{digest}" if len(digits) > 5 else f"#{digest}"


class Redactor:
    """structlog processor that removes secrets always and message bodies unless allowed."""

    def __init__(self, *, log_bodies: bool = False) -> None:
        self.log_bodies = log_bodies

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in SECRET_FIELDS.intersection(event_dict):
            event_dict[key] = REDACTED
        if not self.log_bodies:
            for key in BODY_FIELDS.intersection(event_dict):
                event_dict[key] = REDACTED
        return event_dict


def configure(
    *,
    level: str = "info",
    log_bodies: bool = False,
    stream: TextIO | None = None,
    json: bool = True,
) -> None:
    """Configure structlog for JSON lines on ``stream`` (stderr by default, as journald expects)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(log_bodies=log_bodies),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> Any:
    """A bound logger; adapters call this, the pure core never logs."""
    return structlog.get_logger(**initial)
