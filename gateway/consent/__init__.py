"""Consent domain model and policy: pure functions of state and message."""
