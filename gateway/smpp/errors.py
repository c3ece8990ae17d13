"""Typed SMPP errors; each carries the command_status the peer must get.

Two axes (Cloudhopper, h11): recoverable errors consume one whole frame and are answered
(``generic_nack`` or the command's ``*_resp`` with ``status``) while the session goes on;
unrecoverable ones (framing lost) close the connection. Local errors are ours (we tried to
send something the state forbids); remote errors are the peer's.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.smpp.constants import CommandStatus


class SmppError(GatewayError):
    """Root of the protocol ring."""

    status: int = CommandStatus.ESME_RUNKNOWNERR

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class FramingError(SmppError):
    """The byte stream cannot be framed (bad or oversize command_length): close the connection."""

    status = CommandStatus.ESME_RINVCMDLEN

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        command_id: int | None = None,
        sequence_number: int | None = None,
    ) -> None:
        super().__init__(message, status=status)
        # Known when a whole header arrived: lets the session send generic_nack before closing.
        self.command_id = command_id
        self.sequence_number = sequence_number


class PduDecodeError(SmppError):
    """One whole frame could not be decoded; answer it and carry on.

    ``command_id`` and ``sequence_number`` come from the (valid) header so the answer can be
    addressed: the command's own response for a known request, ``generic_nack`` otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        command_id: int,
        sequence_number: int,
    ) -> None:
        super().__init__(message, status=status)
        self.command_id = command_id
        self.sequence_number = sequence_number


class PduEncodeError(SmppError):
    """A PDU we were asked to send has a field that cannot be encoded (a bug on our side)."""

    status = CommandStatus.ESME_RSYSERR


class LocalProtocolError(SmppError):
    """We tried to do something the session state forbids."""

    status = CommandStatus.ESME_RINVBNDSTS


class RemoteProtocolError(SmppError):
    """The peer did something the session state forbids."""

    status = CommandStatus.ESME_RINVBNDSTS
