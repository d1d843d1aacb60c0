"""``hamanasu audit``: verify a node's ledger, save signed heads, audit a job's usage.

Exit codes (every command):

* 0: everything held.
* 1: checked and found not to hold (tampered ledger, failed proof, failed usage audit):
  the report is printed, then one ``error:`` line on stderr.
* 2: could not check: bad arguments, or a file that cannot be read (missing, not a
  ledger, damaged, a table or column gone): one ``error:`` line on stderr, nothing else.

No command prints a traceback. Output is a table, or JSON with ``--format json``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from consent.errors import (
    ConsentError,
    ConsentImportError,
    LedgerUnreadableError,
    LedgerVerificationError,
    UsageAuditError,
)
from consent.ledger import Ledger
from consent.registry import ConsentRegistry
from consent.signing import (
    SignedTreeHead,
    generate_key,
    load_private_key,
    load_public_key,
)
from consent.usage import UsageReport, audit_usage, load_disclosure
from consent.verify import verify_inclusion, verify_ledger

__all__ = ["app"]

app = typer.Typer(
    help="Verify consent ledgers and job usage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_KEY_NAMES = ("ledger.key", "node.key", "signing.key", "ledger_key.pem", "node_key.pem")


class OutputFormat(StrEnum):
    """How results are printed."""

    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="table (readable) or json (for scripts).")
]
LedgerArg = Annotated[Path, typer.Argument(help="The node's ledger file (SQLite).")]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code=code)


@contextmanager
def _readable(ledger: Path) -> Iterator[None]:
    """Turn a ledger file that cannot be read into one ``error:`` line and exit code 2."""
    try:
        yield
    except LedgerUnreadableError as exc:
        _fail(f"cannot read ledger {ledger}: {exc.reason}")
    except (sqlite3.Error, RecursionError) as exc:
        _fail(f"cannot read ledger {ledger}: {type(exc).__name__}: {exc}")


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        _fail(f"{what} {path} does not exist")
    return path


def _emit(fmt: OutputFormat, data: Any, table: Table) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        Console().print(table)


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@app.command()
def verify(
    ledger: LedgerArg,
    key: Annotated[Path, typer.Option("--key", help="The node's Ed25519 public key (PEM).")],
    since: Annotated[
        Path | None, typer.Option("--since", help="A signed head saved earlier (JSON).")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Recompute the tree, check every signed head, and check the ledger extends --since.

    Exit 0: verified.

    Exit 1: verification failed: the ledger was read and does not hold (first bad entry named).

    Exit 2: cannot read (missing, damaged, not a ledger, a table gone) or bad arguments.

    Failures print one line on stderr, never a traceback.
    """
    _existing(ledger, "ledger")
    try:
        public_key = load_public_key(_existing(key, "key"))
        earlier = (
            SignedTreeHead.model_validate_json(_existing(since, "head file").read_bytes())
            if since is not None
            else None
        )
    except ConsentError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(f"head file {since} is not a signed tree head: {str(exc).splitlines()[0]}")
    try:
        with _readable(ledger):
            report = verify_ledger(ledger, public_key, since=earlier)
    except LedgerVerificationError as exc:
        data = {
            "ok": False,
            "ledger": str(ledger),
            "first_bad_index": exc.index,
            "last_bad_index": exc.last_index,
            "reason": exc.reason,
        }
        _emit(fmt, data, _kv_table("Ledger verification FAILED", list(data.items())))
        _fail(f"ledger verification failed: {exc}", code=1)
    data = {"ok": True, **report.model_dump(mode="json")}
    rows = [
        ("ok", True),
        ("ledger", report.path),
        ("entries", report.tree_size),
        ("root", report.root_hash),
        ("signed heads checked", report.heads_checked),
        (
            "latest head",
            "-"
            if report.latest_head is None
            else f"size {report.latest_head.tree_size} at "
            f"{report.latest_head.timestamp.isoformat()}",
        ),
        (
            "extends earlier head",
            "-" if report.since_tree_size is None else f"size {report.since_tree_size}",
        ),
    ] + [(f"entries: {k}", v) for k, v in report.entries_by_kind.items()]
    _emit(fmt, data, _kv_table("Ledger verified", rows))


def _private_key_path(path: Path) -> Path:
    if path.is_dir():
        for name in _KEY_NAMES:
            if (path / name).is_file():
                return path / name
        _fail(f"no key file ({', '.join(_KEY_NAMES)}) in {path}")
    return _existing(path, "key")


@app.command()
def head(
    ledger: LedgerArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed head (JSON).")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Node private key or node directory: sign a fresh head. "
            "Without it, the latest head the ledger issued is saved.",
        ),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Save a signed tree head, for a later `verify --since`.

    Without --key the ledger is only read (opened read-only; a read-only file will do).
    """
    _existing(ledger, "ledger")
    try:
        if key is not None:
            private_key = load_private_key(_private_key_path(key))
            with _readable(ledger), Ledger(ledger, private_key) as store:
                sth = store.sign_head()
        else:
            with _readable(ledger), Ledger(ledger, read_only=True) as store:
                latest = store.latest_head()
            if latest is None:
                _fail(f"{ledger} holds no signed head; pass --key to sign one")
            sth = latest
    except ConsentError as exc:
        _fail(str(exc))
    out.write_text(sth.model_dump_json(indent=2) + "\n", encoding="utf-8")
    data = sth.model_dump(mode="json")
    table = _kv_table("Signed tree head", [*data.items(), ("out", out)])
    _emit(fmt, {**data, "out": str(out)}, table)


@app.command()
def keygen(
    out: Annotated[
        Path,
        typer.Argument(help="Private key file to create (0600); the public key goes to OUT.pub."),
    ],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Create a node's Ed25519 ledger key."""
    from consent.signing import key_id

    try:
        private_key = generate_key(out)
    except ConsentError as exc:
        _fail(str(exc))
    data = {
        "private_key": str(out),
        "public_key": f"{out}.pub",
        "key_id": key_id(private_key.public_key()),
    }
    _emit(fmt, data, _kv_table("Key created", list(data.items())))


@app.command()
def proof(
    ledger: LedgerArg,
    index: Annotated[int, typer.Option("--index", help="The entry to prove.")],
    key: Annotated[Path, typer.Option("--key", help="The node's public key (PEM).")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Print an inclusion proof of one entry under the latest signed head, checked.

    The ledger is only read (opened read-only; a read-only file will do).
    """
    _existing(ledger, "ledger")
    try:
        public_key = load_public_key(_existing(key, "key"))
        with _readable(ledger), Ledger(ledger, read_only=True) as store:
            sth = store.latest_head()
            if sth is None:
                _fail(f"{ledger} holds no signed head")
            if not 0 <= index < sth.tree_size:
                _fail(f"--index must be between 0 and {sth.tree_size - 1}")
            path = store.inclusion_proof(index, sth.tree_size)
            data_bytes = store.entry_bytes(index)
            leaf = store.leaf_hash(index)
    except ConsentError as exc:
        _fail(str(exc))
    try:
        sth.verify(public_key)
        verify_inclusion(leaf, index, sth.tree_size, path, bytes.fromhex(sth.root_hash))
    except ConsentError as exc:
        _fail(f"proof does not verify: {exc}", code=1)
    data = {
        "index": index,
        "tree_size": sth.tree_size,
        "root_hash": sth.root_hash,
        "leaf_hash": leaf.hex(),
        "proof": [p.hex() for p in path],
        "entry": json.loads(data_bytes),
    }
    _emit(
        fmt,
        data,
        _kv_table(
            "Inclusion proof (verified)",
            [
                ("index", index),
                ("tree size", sth.tree_size),
                ("root", sth.root_hash),
                ("leaf", leaf.hex()),
                *((f"path[{i}]", p.hex()) for i, p in enumerate(path)),
            ],
        ),
    )


def _usage_table(report: UsageReport) -> Table:
    table = Table(title=f"Usage audit of job {report.job_id}: {'OK' if report.ok else 'FAILED'}")
    for col in (
        "round",
        "entry",
        "time",
        "purpose",
        "logged",
        "disclosed",
        "commitment",
        "no consent",
        "problems",
    ):
        table.add_column(col)
    for r in report.rounds:
        table.add_row(
            str(r.round),
            "-" if r.ledger_index is None else str(r.ledger_index),
            "-" if r.at is None else r.at.isoformat(),
            ";".join(r.purpose),
            "-" if r.n_logged is None else str(r.n_logged),
            "-" if r.n_disclosed is None else str(r.n_disclosed),
            "ok" if r.commitment_ok else "MISMATCH",
            str(len(r.not_permitted)),
            "; ".join(r.problems) or "-",
        )
    return table


@app.command()
def usage(
    ledger: LedgerArg,
    job: Annotated[str, typer.Option("--job", help="The job id to audit.")],
    disclosure: Annotated[
        Path, typer.Option("--disclosure", help="The node's disclosure: job_id, salt, rounds.")
    ],
    consents: Annotated[Path, typer.Option("--consents", help="The node's consent registry.")],
    key: Annotated[
        Path | None, typer.Option("--key", help="Also verify the ledger with this public key.")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Check a job's commitments and that every subject used had a permitting consent."""
    _existing(ledger, "ledger")
    _existing(consents, "consent registry")
    try:
        disclosed = load_disclosure(_existing(disclosure, "disclosure"))
        if disclosed.job_id != job:
            _fail(f"disclosure is for job {disclosed.job_id!r}, not {job!r}")
        public_key = load_public_key(_existing(key, "key")) if key is not None else None
    except ConsentError as exc:
        _fail(str(exc))
    if public_key is not None:
        try:
            with _readable(ledger):
                verify_ledger(ledger, public_key)
        except LedgerVerificationError as exc:
            _fail(f"ledger verification failed: {exc}", code=1)
    try:
        with _readable(ledger), ConsentRegistry(consents) as registry:
            report = audit_usage(ledger, job, disclosed, registry)
    except LedgerVerificationError as exc:
        _fail(f"usage audit failed: {exc}", code=1)
    except UsageAuditError as exc:
        failed = exc.report
        assert isinstance(failed, UsageReport)
        _emit(fmt, failed.model_dump(mode="json"), _usage_table(failed))
        _fail(f"usage audit failed: {exc}", code=1)
    except ConsentError as exc:
        _fail(str(exc))
    _emit(fmt, report.model_dump(mode="json"), _usage_table(report))


@app.command("import-consents")
def import_consents(
    source: Annotated[Path, typer.Argument(help="A FHIR R5 Consent/Bundle (.json) or a CSV.")],
    consents: Annotated[Path, typer.Option("--consents", help="The node's consent registry.")],
    ledger: Annotated[
        Path | None, typer.Option("--ledger", help="Record consent events in this ledger.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Node private key or directory (signs heads).")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Import consents atomically into a registry (node side), recording ledger events."""
    _existing(source, "consent file")
    try:
        private_key = load_private_key(_private_key_path(key)) if key is not None else None
        store = Ledger(ledger, private_key) if ledger is not None else None
        with ConsentRegistry(consents, ledger=store) as registry:
            if source.suffix.lower() == ".csv":
                result = registry.import_csv(source)
            else:
                result = registry.import_fhir(source)
        if store is not None:
            store.close()
    except ConsentImportError as exc:
        if fmt is OutputFormat.json:
            problems = [p.model_dump() for p in exc.problems]
            typer.echo(json.dumps({"ok": False, "problems": problems}))
        else:
            table = Table(title=f"{source}: rejected, nothing imported")
            for col in ("where", "field", "reason"):
                table.add_column(col)
            for p in exc.problems:
                table.add_row(p.location, p.field, p.reason)
            Console().print(table)
        _fail(
            f"{len(exc.problems)} bad entr{'y' if len(exc.problems) == 1 else 'ies'} "
            f"in {source}; nothing imported"
        )
    except ConsentError as exc:
        _fail(str(exc))
    data = result.model_dump(mode="json")
    _emit(
        fmt,
        data,
        _kv_table(
            "Consents imported",
            [
                ("source", result.source),
                ("new versions", result.imported),
                ("unchanged", result.unchanged),
                ("subjects", result.subjects),
                ("ledger entries", len(result.ledger_indices)),
            ],
        ),
    )
