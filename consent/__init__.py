"""Consent records, consent evaluation and the tamper-evident ledger."""

from consent.errors import (
    ConsentError,
    ConsentImportError,
    ConsentValidationError,
    IdentifierInPayloadError,
    ImportProblem,
    KeyFileError,
    LedgerError,
    LedgerUnreadableError,
    LedgerVerificationError,
    ProofError,
    SignatureError,
    UsageAuditError,
)
from consent.evaluate import evaluate, evaluate_many
from consent.ledger import Ledger, LedgerEntry, subject_commitment
from consent.model import (
    Consent,
    ConsentStatus,
    Decision,
    DecisionType,
    Period,
    Provision,
    Purpose,
    UseRequest,
)
from consent.registry import ConsentRegistry, ImportResult
from consent.signing import SignedTreeHead, generate_key, load_private_key, load_public_key
from consent.usage import Disclosure, UsageReport, audit_usage
from consent.verify import VerificationReport, verify_consistency, verify_inclusion, verify_ledger

__all__ = [
    "Consent",
    "ConsentError",
    "ConsentImportError",
    "ConsentRegistry",
    "ConsentStatus",
    "ConsentValidationError",
    "Decision",
    "DecisionType",
    "Disclosure",
    "IdentifierInPayloadError",
    "ImportProblem",
    "ImportResult",
    "KeyFileError",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerUnreadableError",
    "LedgerVerificationError",
    "Period",
    "ProofError",
    "Provision",
    "Purpose",
    "SignatureError",
    "SignedTreeHead",
    "UsageAuditError",
    "UsageReport",
    "UseRequest",
    "VerificationReport",
    "audit_usage",
    "evaluate",
    "evaluate_many",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "subject_commitment",
    "verify_consistency",
    "verify_inclusion",
    "verify_ledger",
]
