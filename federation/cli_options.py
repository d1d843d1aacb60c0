"""Command-line options that the node's and the coordinator's CLIs share."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

__all__ = ["FormatOption", "OutputFormat"]


class OutputFormat(StrEnum):
    """How a command prints its result: a readable table, or JSON for scripts."""

    table = "table"
    json = "json"


#: ``--format table|json``; anything else is refused by the parser with exit code 2.
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="table (readable) or json (for scripts).")
]
