"""A node's state folder: its key, policy, consent registry, ledger, budget and job salts.

Everything a node keeps lives under one folder; private material (the Ed25519 key and
the per-job salts of subject commitments) is written with 0600 permissions and never
logged.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
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

    def _job_file(self, job_id: str, suffix: str) -> Path:
        """Return ``salts/<job_id><suffix>``, creating the folder (0700).

        Raises:
            ValueError: ``job_id`` is not a safe file name.
        """
        if not job_id or "/" in job_id or "\\" in job_id or job_id.startswith("."):
            raise ValueError(f"job_id: {job_id!r} is not a safe name")
        folder = self.root / "salts"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / f"{job_id}{suffix}"

    def salt(self, job_id: str) -> bytes:
        """Return the job's commitment salt, creating it (0600) on first use.

        Processes racing to create it all get the same salt: it is written whole to a
        private temporary file and linked into place only if no salt exists yet.

        Raises:
            ValueError: ``job_id`` is not a safe file name.
        """
        path = self._job_file(job_id, ".json")
        if not path.exists():
            data = json.dumps({"job_id": job_id, "salt": secrets.token_hex(32)})
            tmp = _write_private_temp(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            finally:
                os.unlink(tmp)
        return bytes.fromhex(json.loads(path.read_text())["salt"])

    def record_subjects(self, job_id: str, round_no: int, subjects: list[str]) -> None:
        """Keep, on the node only (0600), which subjects a round used, for a later disclosure.

        Safe across processes: the read-modify-write holds an exclusive lock on the job's
        lock file, and the new content replaces the old atomically from a private
        temporary file, so no round is lost and no reader sees half a file.

        Raises:
            ValueError: ``job_id`` is not a safe file name.
        """
        self.salt(job_id)  # validates the name and creates the folder
        path = self._job_file(job_id, ".subjects.json")
        lock_fd = os.open(self._job_file(job_id, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            data = json.loads(path.read_text()) if path.exists() else {}
            new, earlier = sorted(set(subjects)), data.get(str(round_no))
            if earlier is not None and earlier != new:
                # the round is read again (retried) with other subjects: keep both lists
                rereads_path = self._job_file(job_id, ".rereads.json")
                rereads = json.loads(rereads_path.read_text()) if rereads_path.exists() else {}
                rereads.setdefault(str(round_no), []).append(earlier)
                tmp = _write_private_temp(rereads_path, json.dumps(rereads))
                os.replace(tmp, rereads_path)
            data[str(round_no)] = new
            os.replace(_write_private_temp(path, json.dumps(data)), path)
        finally:
            os.close(lock_fd)  # closing releases the lock

    def disclosure(self, job_id: str) -> dict[str, object]:
        """Return what the node discloses to an auditor for one job.

        That is the job's salt and the subjects of each round, in the form
        ``hamanasu audit usage --disclosure`` reads (``job_id``, ``salt``, ``rounds``, and
        ``rereads``: the earlier subject lists of rounds read again with other subjects).

        Raises:
            FileNotFoundError: the node never ran that job.
            ValueError: ``job_id`` is not a safe file name.
        """
        path = self._job_file(job_id, ".subjects.json")
        if not path.exists():
            raise FileNotFoundError(f"no usage of job {job_id} at this node")
        rereads_path = self._job_file(job_id, ".rereads.json")
        out: dict[str, object] = {
            "job_id": job_id,
            "salt": self.salt(job_id).hex(),
            "rounds": json.loads(path.read_text()),
        }
        if rereads_path.exists():
            out["rereads"] = json.loads(rereads_path.read_text())
        return out

    def exists(self) -> bool:
        """Return whether the node was initialised (its key and policy exist)."""
        return self.key_path.exists() and self.policy_path.exists()


def _write_private_temp(beside: Path, text: str) -> str:
    """Write ``text`` to a new 0600 temporary file next to ``beside``, synced; return its path."""
    fd, tmp = tempfile.mkstemp(dir=beside.parent, prefix=f".{beside.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp
