"""Consent persistence: SQLite (embedded) and Redis (shared) behind one interface."""
