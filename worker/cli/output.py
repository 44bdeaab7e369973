"""How the commands print: errors, JSON, tables and counts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from orderfleet.worker.settings import redact

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the error (secrets redacted) and end the command with this exit code."""
    typer.secho(f"orderfleet: {redact(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Print data as indented JSON."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a Rich table whose columns fold long values instead of cutting them."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def cell(value: Any) -> str:
    """A value as table text: strings as they are, None as a dash, the rest as JSON."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def plural(count: int, noun: str) -> str:
    """'1 order', '2 orders'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
