"""The root of every error the gateway raises on purpose."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class; each ring (smpp, store, config) derives its own root from it."""
