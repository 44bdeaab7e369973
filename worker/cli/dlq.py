"""`orderfleet dlq list|show|replay|purge`: the dead letters."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from orderfleet.worker.cli.connect import celery_app, checked_runtime
from orderfleet.worker.cli.output import JSON_OPTION, cell, fail, plural, print_json, print_table
from orderfleet.worker.servers import BROKER, DATABASE

if TYPE_CHECKING:
    from orderfleet.worker.runtime import Runtime

dlq_cli = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)

LIST_COLUMNS = ("id", "receivedAt", "reason", "orderId", "eventId", "replayedAt")
ERROR_SHOWN = 120  # characters of a dead letter's error in the list


@dlq_cli.command("list")
def dlq_list(
    reason: str | None = typer.Option(None, help="Only dead letters of this reason."),
    limit: int = typer.Option(1000, min=1, help="At most this many (oldest first)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List dead letters, oldest first (without their raw messages)."""
    from orderfleet.worker.dead_letters import list_dead_letters

    letters = list_dead_letters(checked_runtime().sessions, reason, limit)
    if json_output:
        print_json(letters)
        return
    rows = (letter_row(letter) for letter in letters)
    print_table(plural(len(letters), "dead letter"), (*LIST_COLUMNS, "error"), rows)


def letter_row(letter: dict[str, Any]) -> list[str]:
    """A dead letter's list row: its columns, then the start of its error."""
    return [*(cell(letter[c]) for c in LIST_COLUMNS), cell(letter["error"])[:ERROR_SHOWN]]


@dlq_cli.command("show")
def dlq_show(
    letter_id: int = typer.Argument(..., help="The dead letter's id."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show one dead letter with its raw message; exit 1 when there is no such dead letter."""
    from orderfleet.worker.dead_letters import dead_letter

    letter = dead_letter(checked_runtime().sessions, letter_id)
    if letter is None:
        fail(f"dead letter {letter_id} not found", 1)
    if json_output:
        print_json(letter)
        return
    rows = ((key, cell(value)) for key, value in letter.items())
    print_table(f"dead letter {letter_id}", ("field", "value"), rows)


@dlq_cli.command("replay")
def dlq_replay(
    letter_id: int | None = typer.Argument(None, help="The dead letter to replay."),
    event: str | None = typer.Option(
        None, "--event", help="Send this fixed-up event instead: a JSON file, or '-' for stdin."
    ),
    reason: str | None = typer.Option(None, help="Replay every unreplayed one of this reason."),
) -> None:
    """Send dead letters back through validation to a worker (step 1), marking them replayed."""
    if (letter_id is None) == (reason is None):
        fail("give either a dead letter ID or --reason")
    if event is not None and letter_id is None:
        fail("--event goes with a single dead letter ID")
    fixed = None if event is None else read_event(event)
    runtime = checked_runtime((DATABASE, BROKER))
    from kombu.exceptions import OperationalError as BrokerError

    try:
        if letter_id is not None:
            replay_one(runtime, letter_id, fixed)
        elif reason is not None:
            replay_all(runtime, reason)
    except BrokerError as exc:
        fail(f"cannot reach the broker: {exc}")


def read_event(path: str) -> str:
    """The text of a fixed-up event from a file, or stdin for '-'."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--event {path}: {exc.strerror or exc}")


def _sender() -> Callable[[dict[str, Any], str], Any]:
    """The producer's raw send, on this command's Celery app."""
    from orderfleet.tasks.producer import send_raw

    return partial(send_raw, app=celery_app())


def replay_one(runtime: Runtime, letter_id: int, fixed: str | None) -> None:
    """Replay one dead letter, or exit 1 when it is missing or still invalid."""
    from orderfleet.models import InvalidEvent
    from orderfleet.worker.dead_letters import NotFound, replay_dead_letter

    try:
        sent = replay_dead_letter(_sender(), runtime, letter_id, fixed)
    except NotFound as exc:
        fail(str(exc), 1)
    except InvalidEvent as exc:
        fail(f"dead letter {letter_id} is still invalid, not replayed: {exc}", 1)
    typer.echo(
        f"replayed dead letter {letter_id}: event {sent.event_id} of order {sent.order_id} "
        f"sent to {sent.task_name} on {sent.queue}"
    )


def replay_all(runtime: Runtime, reason: str) -> None:
    """Replay every unreplayed dead letter of a reason; exit 1 when some are still invalid."""
    from orderfleet.worker.dead_letters import replay_reason

    replayed, refused = replay_reason(_sender(), runtime, reason)
    typer.echo(f"replayed {plural(len(replayed), 'dead letter')} of reason {reason}")
    for letter in refused:
        typer.secho(
            f"dead letter {letter.letter_id} is still invalid, not replayed: {letter.error}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if refused:
        raise typer.Exit(1)


@dlq_cli.command("purge")
def dlq_purge(
    before: str = typer.Option(..., help="Delete dead letters received before this RFC 3339 time."),
    reason: str | None = typer.Option(None, help="Only dead letters of this reason."),
) -> None:
    """Delete old dead letters and print how many."""
    from orderfleet.models.wire import WireError, to_instant
    from orderfleet.worker.dead_letters import purge_dead_letters

    try:
        cutoff = to_instant(before)
    except WireError as exc:
        fail(f"--before {before!r} {exc}")
    purged = purge_dead_letters(checked_runtime().sessions, cutoff, reason)
    typer.echo(f"purged {plural(purged, 'dead letter')}")
