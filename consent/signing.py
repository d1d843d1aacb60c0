r"""Ed25519 keys for a node's ledger, and signed tree heads.

A signed tree head (STH) commits to a tree size, its root and a timestamp. The signed
message is ``b"hamanasu-sth-v1\\n" + RFC8785({"key_id", "root_hash", "timestamp",
"tree_size"})``. Private keys are written as PKCS#8 PEM with mode 0600 and never appear
in messages or logs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from consent.errors import KeyFileError, SignatureError
from consent.model import UtcDatetime, utc

__all__ = [
    "SignedTreeHead",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_tree_head",
    "write_public_key",
]

_STH_CONTEXT = b"hamanasu-sth-v1\n"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id: SHA-256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_key(path: Path, private_key: Ed25519PrivateKey | None = None) -> Ed25519PrivateKey:
    """Create a node key, write it as PEM with mode 0600, and its public key beside it.

    Args:
        path: where the private key goes; the public key goes to ``path`` + ``.pub``.
        private_key: the key to write (tests pass a fixed one); a fresh key by default.

    Returns:
        The private key.

    Raises:
        KeyFileError: ``path`` already exists (keys are never overwritten).

    """
    path = Path(path)
    key = private_key if private_key is not None else Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)
    write_public_key(key.public_key(), path.with_name(path.name + ".pub"))
    return key


def write_public_key(public_key: Ed25519PublicKey, path: Path) -> None:
    """Write a public key as SubjectPublicKeyInfo PEM."""
    Path(path).write_bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a node's Ed25519 private key (PEM, unencrypted).

    Raises:
        KeyFileError: missing, readable by group/others, or not an Ed25519 private key.

    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"private key {path} is accessible by others; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM, or a private key file's public half).

    Raises:
        KeyFileError: missing or not an Ed25519 key.

    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            return load_private_key(path).public_key()
        except KeyFileError:
            raise KeyFileError(f"{path} is not a PEM Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


def _timestamp_text(at: datetime) -> str:
    return utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SignedTreeHead(BaseModel):
    """A node's signed statement of its ledger's size and root at a time.

    Attributes:
        tree_size: number of entries covered.
        root_hash: RFC 9162 root over those entries (hex).
        timestamp: when the head was signed (UTC).
        key_id: SHA-256 of the signer's raw public key (hex).
        signature: Ed25519 signature (base64) over :meth:`signed_message`.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tree_size: int = Field(ge=0)
    root_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    timestamp: UtcDatetime
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str

    def signed_message(self) -> bytes:
        """Return the exact bytes the signature covers."""
        return _message(self.tree_size, self.root_hash, self.timestamp, self.key_id)

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Check the signature with the node's public key.

        Raises:
            SignatureError: wrong key or the head was altered (reported opaquely).

        """
        if key_id(public_key) != self.key_id:
            raise SignatureError("signed tree head was not signed by this key")
        try:
            signature = base64.b64decode(self.signature, validate=True)
            public_key.verify(signature, self.signed_message())
        except (InvalidSignature, ValueError):
            raise SignatureError("signed tree head signature is invalid") from None


def _message(tree_size: int, root_hash: str, timestamp: datetime, kid: str) -> bytes:
    body: dict[str, Any] = {
        "key_id": kid,
        "root_hash": root_hash,
        "timestamp": _timestamp_text(timestamp),
        "tree_size": tree_size,
    }
    return _STH_CONTEXT + rfc8785.dumps(body)


def sign_tree_head(
    private_key: Ed25519PrivateKey, tree_size: int, root: bytes, at: datetime
) -> SignedTreeHead:
    """Return a signed tree head for ``tree_size`` and ``root`` at time ``at``."""
    kid = key_id(private_key.public_key())
    ts = datetime.strptime(_timestamp_text(at), "%Y-%m-%dT%H:%M:%S.%fZ")
    ts = ts.replace(tzinfo=utc(at).tzinfo)
    signature = private_key.sign(_message(tree_size, root.hex(), ts, kid))
    return SignedTreeHead(
        tree_size=tree_size,
        root_hash=root.hex(),
        timestamp=ts,
        key_id=kid,
        signature=base64.b64encode(signature).decode(),
    )
