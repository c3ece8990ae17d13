"""Structured logs and metrics; imports nothing else from the gateway."""
