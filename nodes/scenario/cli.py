"""``hamanasu scenario generate``: write the synthetic Iwamizawa data, nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Generate a synthetic scenario's data.")


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the holders' data.")],
    preset: Annotated[str, typer.Option(help="iwamizawa or hokkaido.")] = "iwamizawa",
    years: Annotated[
        list[int] | None, typer.Option("--year", help="Years (default all of the preset's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="The scenario seed.")] = 2017,
    scale: Annotated[float, typer.Option(help="Multiplies every table's size.")] = 1.0,
    sqlite: Annotated[
        bool, typer.Option("--sqlite", help="Also one SQLite database and mapping per holder.")
    ] = False,
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            metavar="URL",
            help="Also one schema per holder in this PostgreSQL database, and a mapping each.",
        ),
    ] = None,
    schema_prefix: Annotated[
        str, typer.Option(help="Prefix of the PostgreSQL schema names (default none).")
    ] = "",
) -> None:
    """Write every holder's data files and consents, and optionally a database per holder.

    With ``--sqlite`` or ``--postgres``: one SQLite file, or one PostgreSQL schema, per
    holder, and the mapping file a node reads it through.
    """
    import sqlalchemy as sa

    from nodes.scenario.databases import postgres_schema, show_url, write_postgres, write_sqlite
    from nodes.scenario.generator import generate

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message.splitlines()[0]}", err=True)
        return typer.Exit(code=2)

    if sqlite and postgres:
        raise fail("--sqlite and --postgres: choose one")
    if schema_prefix and not re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", schema_prefix):
        raise fail("--schema-prefix: lower-case letters, digits and _, starting with a letter")
    if postgres:
        try:
            backend = sa.engine.make_url(postgres).get_backend_name()
        except sa.exc.ArgumentError:
            backend = None
        if backend != "postgresql":
            raise fail(f"--postgres: {postgres!r} is not a postgresql:// URL")
    try:
        manifest = generate(preset, out, seed, years=years, scale=scale)
    except ValueError as exc:
        raise fail(str(exc)) from None
    for node in manifest.nodes:
        rows = ", ".join(f"{d} {n}" for d, n in node.rows.items())
        where = str(out / node.name)
        try:
            if sqlite:
                where = str(write_sqlite(out / node.name, node.files))
            elif postgres:
                schema = postgres_schema(node.name, schema_prefix)
                mapping = write_postgres(out / node.name, node.files, postgres, schema)
                where = f"{mapping} (schema {schema} of {show_url(postgres)})"
        except ValueError as exc:
            raise fail(str(exc)) from None
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip()
            raise fail(f"--postgres: {show_url(str(postgres))}: {reason}") from None
        typer.echo(f"{node.name}: {rows} -> {where}")


@app.command("views")
def views_cmd(
    data: Annotated[Path, typer.Option("--data", help="A generated scenario's folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the holders' views.")],
    preset: Annotated[str, typer.Option(help="The scenario (iwamizawa).")] = "iwamizawa",
) -> None:
    """Write each holder's one-row-per-resident views, the files linked jobs read.

    Every holder shapes only its own tables (:mod:`nodes.scenario.linked_views`); each
    view goes to ``OUT/<holder>/<view>.csv``, one line of output per file.
    """
    import pandas as pd

    from nodes.scenario import ScenarioManifest
    from nodes.scenario.linked_views import HOLDER_VIEWS

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message.splitlines()[0]}", err=True)
        return typer.Exit(code=2)

    if preset != "iwamizawa":
        raise fail(f"--preset: {preset!r}: views exist for iwamizawa only")
    try:
        manifest = ScenarioManifest.model_validate_json((data / "scenario.json").read_text())
    except OSError:
        raise fail(
            f"--data: {data} holds no scenario (run `hamanasu scenario generate --out {data}`)"
        ) from None
    except ValueError:
        raise fail(f"--data: {data / 'scenario.json'} is not a scenario manifest") from None
    if manifest.preset != preset:
        raise fail(f"--data: {data} holds the {manifest.preset} scenario, not {preset}")
    for node in manifest.nodes:
        for view, table, make in HOLDER_VIEWS.get(node.name, []):
            source = data / node.name / node.files.get(table, f"{table}.csv")
            try:
                frame = (
                    pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
                )
                rows = make(frame)
            except OSError as exc:
                raise fail(f"--data: {source}: {exc.strerror or exc}") from None
            except (KeyError, ValueError) as exc:
                raise fail(f"--data: {source}: not the scenario's {table} table ({exc})") from None
            target = out / node.name / f"{view}.csv"
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                rows.to_csv(target, index=False)
            except OSError as exc:
                raise fail(f"--out: {target}: {exc.strerror or exc}") from None
            typer.echo(f"{node.name}: {view} ({len(rows)} rows) -> {target}")
