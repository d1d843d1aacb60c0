"""A generated scenario as databases: one SQLite file per holder with a mapping file each.

Each holder's domain tables become tables of ``<holder>.db`` beside its files, and
``mapping.toml`` maps them one to one onto the data model, so a node can run from the
database with ``data_dir = "mapping.toml"``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from federation.cdm import get_schema
from nodes.data_loading import load_table

__all__ = ["write_sqlite", "identity_mapping"]


def identity_mapping(url: str, domains: dict[str, str]) -> str:
    """Return a mapping file's text reading each domain from the table of its name.

    Args:
        url: the database URL (a relative SQLite path is taken from the mapping's folder).
        domains: data-model domain -> holder table.
    """
    lines = [f'url = "{url}"', ""]
    for domain, table in domains.items():
        lines += [f"[domains.{domain}]", f'table = "{table}"', f"[domains.{domain}.columns]"]
        lines += [f'{name} = "{name}"' for name in get_schema(domain).names]
        lines.append("")
    return "\n".join(lines)


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with dates as ISO text and categories as text, as SQL stores them."""
    out = frame.copy()
    for name, dtype in out.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            out[name] = out[name].dt.strftime("%Y-%m-%d")
        elif isinstance(dtype, pd.CategoricalDtype):
            out[name] = out[name].astype(object)
    return out


def write_sqlite(holder_dir: Path, files: dict[str, str]) -> Path:
    """Write a holder's domain files into ``<holder>.db`` and its ``mapping.toml``.

    Args:
        holder_dir: the holder's scenario folder.
        files: domain -> data file, relative to ``holder_dir``.

    Returns:
        The mapping file.

    Raises:
        nodes.data_loading.DataValidationError: a file does not fit the data model.
    """
    db = holder_dir / f"{holder_dir.name}.db"
    db.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        for domain, name in files.items():
            frame = _storable(load_table(holder_dir / name, domain))
            frame.to_sql(domain, engine, index=False, chunksize=50_000)
    finally:
        engine.dispose()
    mapping = holder_dir / "mapping.toml"
    mapping.write_text(identity_mapping(f"sqlite:///{db.name}", {d: d for d in files}))
    return mapping
