"""Consent records, consent evaluation and the tamper-evident ledger."""
