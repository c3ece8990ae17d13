"""Admin HTTP API: health, readiness, metrics, consent read/write."""
