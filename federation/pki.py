"""The federation's PKI: a CA, the SuperLink's TLS certificate, and per-node SuperNode keys.

Everything is made with ``cryptography``:

* a self-signed CA (ECDSA P-384) that SuperNodes and the coordinator trust
  (``--root-certificates``);
* the SuperLink's server certificate, signed by the CA, with a SubjectAltName for every
  address it is reached at (by default ``127.0.0.1`` and ``localhost``);
* one ECDSA P-384 key pair per node in OpenSSH format for SuperNode authentication: the
  node keeps the private key (``--auth-supernode-private-key``), the operator registers
  the public key with the SuperLink.

Private keys are written 0600 (their folder 0700) and never logged or returned as text.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_HOSTS",
    "NodeKey",
    "Pki",
    "create_node_key",
    "init_pki",
    "load_node_public_key",
    "node_key",
]

#: Addresses the SuperLink certificate covers unless told otherwise (loopback).
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (folder 0700), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass(frozen=True)
class NodeKey:
    """Where one node's SuperNode authentication key pair lives (OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of the federation's PKI under ``root``.

    Layout: ``ca.pem`` / ``ca.key``, ``superlink.pem`` / ``superlink.key``, and
    ``nodes/<name>/supernode_p384`` (private, OpenSSH) with ``supernode_p384.pub``.
    """

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (PEM): SuperNodes' and clients' ``--root-certificates``."""
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA private key (PEM, 0600)."""
        return self.root / "private" / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's TLS certificate (PEM), signed by the CA."""
        return self.root / "superlink.pem"

    @property
    def server_key(self) -> Path:
        """The SuperLink's TLS private key (PEM, 0600)."""
        return self.root / "private" / "superlink.key"

    def node(self, name: str) -> NodeKey:
        """Return the key paths of node ``name`` (they may not exist yet).

        Raises:
            ValueError: ``name`` is not a safe node name.
        """
        if not _NODE_NAME.match(name):
            raise ValueError(f"node name {name!r}: letters, digits, '.', '_', '-' only")
        folder = self.root / "nodes" / name
        return NodeKey(name, folder / "supernode_p384", folder / "supernode_p384.pub")

    def exists(self) -> bool:
        """Return True when the CA and the SuperLink certificate exist."""
        return all(
            p.exists() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key)
        )

    def can_serve(self) -> bool:
        """Return True when the SuperLink can start: CA certificate, its certificate and key.

        The CA's private key is not needed to serve, so an operator may keep it offline.
        """
        return all(p.exists() for p in (self.ca_cert, self.server_cert, self.server_key))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hamanasu federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def init_pki(
    root: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 825, overwrite: bool = False
) -> Pki:
    """Create the CA and the SuperLink certificate (SAN = ``hosts``) under ``root``.

    The SAN also names ``127.0.0.1``: the SuperLink serves its Control and Runtime APIs
    on loopback with the same certificate (:mod:`federation.superlink_listeners`).

    Returns:
        The :class:`Pki`.

    Raises:
        FileExistsError: a CA exists there already and ``overwrite`` is False.
        ValueError: no hosts, or a bad validity period.
    """
    pki = Pki(Path(root))
    if not hosts:
        raise ValueError("hosts: the certificate needs at least one address")
    if not 1 <= days <= 3650:
        raise ValueError("days: must be between 1 and 3650")
    if pki.ca_key.exists() and not overwrite:
        raise FileExistsError(f"{pki.root}: a CA exists already")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("Hamanasu federation CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(list(dict.fromkeys([*hosts, "127.0.0.1"]))), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        pki.ca_key,
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    _write_private(
        pki.server_key,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _write_public(pki.ca_cert, ca_cert.public_bytes(pem))
    _write_public(pki.server_cert, server_cert.public_bytes(pem))
    return pki


def create_node_key(pki: Pki, name: str, *, overwrite: bool = False) -> NodeKey:
    """Create node ``name``'s ECDSA P-384 SuperNode key pair in OpenSSH format.

    The private key is written 0600; only the public key is ever registered.

    Returns:
        The :class:`NodeKey` paths.

    Raises:
        FileExistsError: the node has a key already and ``overwrite`` is False.
        ValueError: ``name`` is not a safe node name.
    """
    key = pki.node(name)
    if key.private_key.exists() and not overwrite:
        raise FileExistsError(f"node {name}: a SuperNode key exists already")
    private = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        key.private_key,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_public(key.public_key, public + f" hamanasu-{name}\n".encode())
    return key


def node_key(pki: Pki, name: str) -> NodeKey:
    """Return node ``name``'s existing key pair, creating it on first use.

    Returns:
        The :class:`NodeKey` paths.
    """
    key = pki.node(name)
    return key if key.private_key.exists() else create_node_key(pki, name)


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Load an OpenSSH public key and check it is ECDSA on P-384.

    Returns:
        The public key.

    Raises:
        ValueError: not an OpenSSH ECDSA P-384 public key.
    """
    try:
        key = serialization.load_ssh_public_key(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - cryptography raises several types here
        raise ValueError(f"{path}: not an OpenSSH public key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ValueError(f"{path}: a SuperNode key must be ECDSA P-384")
    return key
