"""The tamper-evident audit trail: a hash chain of consent changes and refused MTs."""
