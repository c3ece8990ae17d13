"""Structured JSON logs: configuration, redaction and the catalogue of event names.

Event names are stable (a SIEM keys on them): add freely, never rename. Every event the
gateway logs is a constant here, so the catalogue in docs/LOGS.md can be checked against it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
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
CONFIG_RELOAD_PARTIAL: Final = "config_reload_partial"
LISTENER_STARTED: Final = "listener_started"
# Workers (server.workers above 1)
WORKER_STARTED: Final = "worker_started"
WORKERS_READY: Final = "workers_ready"
WORKER_EXITED: Final = "worker_exited"
WORKER_HUNG: Final = "worker_hung"
WORKERS_FAILED: Final = "workers_failed"
SUPERVISOR_GONE: Final = "supervisor_gone"
# Connections and sessions
CONNECTION_ACCEPTED: Final = "connection_accepted"
CONNECTION_REFUSED: Final = "connection_refused"
# server.proxy_protocol: a connection closed for want of a valid PROXY header from a balancer.
PROXY_HEADER_FAILED: Final = "proxy_header_failed"
BIND_REQUESTED: Final = "bind_requested"
BIND_COMPLETED: Final = "bind_completed"
BIND_FAILED: Final = "bind_failed"
BIND_THROTTLED: Final = "bind_throttled"
UPSTREAM_CONNECT_FAILED: Final = "upstream_connect_failed"
UNBIND_RECEIVED: Final = "unbind_received"
SESSION_CLOSED: Final = "session_closed"
CLIENT_UNBOUND_UNANSWERED: Final = "client_unbound_unanswered"
# Protocol faults (the session answered by itself, or timed out)
PDU_REJECTED: Final = "pdu_rejected"
PDU_UNEXPECTED_RESPONSE: Final = "pdu_unexpected_response"
REQUEST_EXPIRED: Final = "request_expired"
FRAMING_FAILED: Final = "framing_failed"
SESSION_STALLED: Final = "session_stalled"
CONNECTION_FAILED: Final = "connection_failed"
# Consent (compliance-relevant)
MT_REJECTED: Final = "mt_rejected"
MO_KEYWORD_MATCHED: Final = "mo_keyword_matched"
MO_DROPPED: Final = "mo_dropped"
MO_SENDER_IGNORED: Final = "mo_sender_ignored"
CONSENT_CHANGED: Final = "consent_changed"
# A CSV import finished (``consent import``): one line for the whole file.
CONSENT_IMPORTED: Final = "consent_imported"
AUTO_REPLY_SENT: Final = "auto_reply_sent"
AUTO_REPLY_SUPPRESSED: Final = "auto_reply_suppressed"
# The record of an auto-reply (its evidence in the consent store) could not be written.
AUTO_REPLY_RECORD_FAILED: Final = "auto_reply_record_failed"
STORE_UNAVAILABLE: Final = "store_unavailable"
# The fail-closed store works again after a fault (its probe passed).
STORE_RECOVERED: Final = "store_recovered"
# The daemon created an empty SQLite consent store (first start).
STORE_CREATED: Final = "store_created"
STORE_INVALIDATIONS_LOST: Final = "store_invalidations_lost"
STORE_LISTENER_FAILED: Final = "store_listener_failed"
STORE_CACHE_UNSAFE: Final = "store_cache_unsafe"
# The web opt-out link (gateway.admin.optout): a link that opts nobody out, and a store that
# failed while recording one that would have.
OPTOUT_LINK_REFUSED: Final = "optout_link_refused"
OPTOUT_LINK_FAILED: Final = "optout_link_failed"
# Audit trail (gateway.audit)
AUDIT_OPENED: Final = "audit_opened"
# The chain's last seq and hash, at an interval: a SIEM's copy proves what the file held then.
AUDIT_CHAIN_HEAD: Final = "audit_chain_head"
# No [audit] file is configured (a Redis store needs audit.path): nothing is recorded.
AUDIT_DISABLED: Final = "audit_disabled"
# No privacy key configured and no place to keep one: pseudonyms change at every start.
PRIVACY_KEY_EPHEMERAL: Final = "privacy_key_ephemeral"
AUDIT_WRITE_FAILED: Final = "audit_write_failed"
AUDIT_WRITE_RECOVERED: Final = "audit_write_recovered"
# A record torn by a crash before it was durable was cut from the end of the file.
AUDIT_TAIL_REPAIRED: Final = "audit_tail_repaired"
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


class Pseudonyms:
    """Subscriber numbers as logs and the audit trail show them: an HMAC-SHA256 under a secret
    key (64 bits of it, as hex), with ``show_digits`` last digits in clear. Stable for one key,
    so lines about one number correlate; without the key, trying every number gives nothing
    (an unkeyed hash of a 10-digit space falls to a laptop in seconds)."""

    __slots__ = ("_key", "show_digits")

    def __init__(self, key: bytes, show_digits: int = 0) -> None:
        self._key = key
        self.show_digits = show_digits

    def __call__(self, digits: str) -> str:
        mac = hmac.digest(self._key, digits.encode(), "sha256")[:8].hex()  # one C call
        show = self.show_digits
        # Digits are shown only where most of the number stays hidden.
        if show and len(digits) >= show + 6:
            return f"…{digits[-show:]}#{mac}"
        return f"#{mac}"


# Until the daemon or the CLI sets the configured key: a random one, so that nothing is ever
# logged under a guessable pseudonym.
_pseudonyms = Pseudonyms(secrets.token_bytes(32))


def set_pseudonyms(pseudonyms: Pseudonyms) -> None:
    global _pseudonyms
    _pseudonyms = pseudonyms


def current_pseudonyms() -> Pseudonyms:
    """The key in use (for worker processes that must write the same pseudonyms)."""
    return _pseudonyms


def mask_subscriber(digits: str) -> str:
    """A stable pseudonym for a number under the configured key (see Pseudonyms)."""
    return _pseudonyms(digits)


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
            bound_fields,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line, newline included (print() writes the newline on its own): the
        # workers of one supervisor share its stderr, and their lines must not interleave.
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


# Longer field values are cut: a peer controls most of them (a 65 KB system_id must not become
# 65 KB of log line, four times).
MAX_FIELD_CHARS: Final = 256
_NOT_CUT: Final = frozenset({"exception", "event"})  # tracebacks stay whole; names are ours


def bound_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every string field at most MAX_FIELD_CHARS characters."""
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS and key not in _NOT_CUT:
            extra = len(value) - MAX_FIELD_CHARS
            event_dict[key] = f"{value[:MAX_FIELD_CHARS]}...[+{extra} chars]"
    return event_dict


class Summary:
    """Log lines of one kind under abuse: the first ``burst`` of a key in an interval are
    logged as they come, the rest only counted, and the count goes out in one line (the same
    event, with ``repeats`` and ``interval_s``) when the interval ends. Bounded in keys.

    ``emit(method, key, event, **fields)``: ``method`` is the bound logger's method to call
    (``log.info``); ``key`` what counts as the same kind (e.g. session and reason).
    """

    __slots__ = ("_burst", "_counts", "_interval_s", "_max_keys", "_timer")

    def __init__(self, *, interval_s: float = 10.0, burst: int = 1, max_keys: int = 10_000) -> None:
        self._interval_s = interval_s
        self._burst = burst
        self._max_keys = max_keys
        # key -> [lines logged this interval, lines only counted, method, event, fields]
        self._counts: dict[Any, list[Any]] = {}
        self._timer: Any = None

    def emit(self, method: Any, key: Any, event: str, **fields: Any) -> None:
        entry = self._counts.get(key)
        if entry is None:
            if len(self._counts) >= self._max_keys:
                self.flush()  # a flood of distinct keys: report what is counted and start over
            entry = self._counts[key] = [0, 0, method, event, fields]
            self._arm()
        if entry[0] < self._burst:
            entry[0] += 1
            method(event, **fields)
            return
        entry[1] += 1
        entry[4] = fields  # the summary line carries the latest occurrence's fields

    def flush(self) -> None:
        """Write the summary lines of the interval that ended and forget it."""
        counts, self._counts = self._counts, {}
        for _logged, repeats, method, event, fields in counts.values():
            if repeats:
                method(event, repeats=repeats, interval_s=self._interval_s, **fields)

    def _arm(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): summaries go out at the next flush
        self._timer = loop.call_later(self._interval_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.flush()


def get_logger(**initial: Any) -> Any:
    """A bound logger; adapters call this, the pure core never logs."""
    return structlog.get_logger(**initial)
