"""A node's state folder: its key, policy, consent registry, ledger, budget and job salts.

Everything a node keeps lives under one folder; private material (the Ed25519 key and
the per-job salts of subject commitments) is written with 0600 permissions and never
logged.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeState"]


@dataclass(frozen=True)
class NodeState:
    """Paths of one node's state under ``root``."""

    root: Path

    @property
    def key_path(self) -> Path:
        """The node's Ed25519 private key (PEM, 0600)."""
        return self.root / "keys" / "node_ed25519.pem"

    @property
    def public_key_path(self) -> Path:
        """The node's Ed25519 public key (PEM), for auditors."""
        return self.root / "keys" / "node_ed25519.pub.pem"

    @property
    def policy_path(self) -> Path:
        """The node policy (TOML)."""
        return self.root / "policy.toml"

    @property
    def consents_path(self) -> Path:
        """The consent registry (SQLite)."""
        return self.root / "consents.sqlite"

    @property
    def ledger_path(self) -> Path:
        """The tamper-evident usage and consent ledger (SQLite)."""
        return self.root / "ledger.sqlite"

    @property
    def budget_path(self) -> Path:
        """The privacy-budget ledger (SQLite)."""
        return self.root / "budget.sqlite"

    def salt(self, job_id: str) -> bytes:
        """Return the job's commitment salt, creating it (0600) on first use.

        Raises:
            ValueError: ``job_id`` is not a safe file name.
        """
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise ValueError(f"job_id: {job_id!r} is not a safe name")
        folder = self.root / "salts"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{job_id}.json"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"job_id": job_id, "salt": secrets.token_hex(32)}, fh)
        return bytes.fromhex(json.loads(path.read_text())["salt"])

    def record_subjects(self, job_id: str, round_no: int, subjects: list[str]) -> None:
        """Keep, on the node only (0600), which subjects a round used, for a later disclosure.

        Raises:
            ValueError: ``job_id`` is not a safe file name.
        """
        self.salt(job_id)  # validates the name and creates the folder
        path = self.root / "salts" / f"{job_id}.subjects.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[str(round_no)] = sorted(subjects)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)

    def disclosure(self, job_id: str) -> dict[str, object]:
        """Return what the node discloses to an auditor for one job.

        That is the job's salt and the subjects of each round.

        Raises:
            FileNotFoundError: the node never ran that job.
        """
        path = self.root / "salts" / f"{job_id}.subjects.json"
        if not path.exists():
            raise FileNotFoundError(f"no usage of job {job_id} at this node")
        return {
            "job_id": job_id,
            "salt": self.salt(job_id).hex(),
            "subjects": json.loads(path.read_text()),
        }

    def exists(self) -> bool:
        """Return whether the node was initialised (its key and policy exist)."""
        return self.key_path.exists() and self.policy_path.exists()
