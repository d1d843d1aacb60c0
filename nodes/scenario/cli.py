"""``hamanasu scenario generate``: write the synthetic Iwamizawa data, nothing else."""

from __future__ import annotations

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
) -> None:
    """Write every holder's data files and consents (and databases with ``--sqlite``)."""
    from nodes.scenario.databases import write_sqlite
    from nodes.scenario.generator import generate

    try:
        manifest = generate(preset, out, seed, years=years, scale=scale)
    except ValueError as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(code=2) from None
    for node in manifest.nodes:
        rows = ", ".join(f"{d} {n}" for d, n in node.rows.items())
        where = out / node.name
        if sqlite:
            mapping = write_sqlite(where, node.files)
            where = mapping
        typer.echo(f"{node.name}: {rows} -> {where}")
