"""One entry point from untrusted input to a validated event: `parse_event`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orderfleet.models.events import (
    EVENT_TYPES,
    Envelope,
    Event,
    derive_event_id,
)
from orderfleet.models.wire import MAX_EVENT_BYTES, WireError, dumps, loads
from pydantic import ValidationError

_PLACEHOLDER_ID = "-"


class InvalidEvent(ValueError):
    """The input is not a valid event; the message names every offending field and rule."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_event(obj: Mapping[str, Any] | str | bytes | Envelope) -> Event:
    """Validate `obj` (a JSON text or object) into a frozen event, or raise InvalidEvent."""
    return parse_stored(obj)[0]


def parse_stored(obj: Mapping[str, Any] | str | bytes | Envelope) -> tuple[Event, str | None]:
    """`parse_event`, and for an object the JSON text it is stored as (`dumps(obj)`).

    The size check writes that text anyway; the event log reuses it instead of writing every
    event a second time (a tenth of a bulk worker's time in py-spy).
    """
    if isinstance(obj, Envelope):
        return obj, None  # type: ignore[return-value]
    data, text = _as_mapping(obj)
    model = _model_for(data)
    event = _validate(model, data)
    if "eventId" not in data and "event_id" not in data:  # a producer's "-" is kept as sent
        event = event.model_copy(update={"event_id": derive_event_id(event.to_wire())})
    return event, text


def _as_mapping(obj: Mapping[str, Any] | str | bytes) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(obj, str | bytes | bytearray):
        return _decode(bytes(obj, "utf-8") if isinstance(obj, str) else bytes(obj)), None
    if not isinstance(obj, Mapping):
        raise InvalidEvent([f"event: must be a JSON object, not {type(obj).__name__}"])
    text, size = _checked_size(obj)
    _check_size(size)
    return obj, text


def _decode(raw: bytes) -> Mapping[str, Any]:
    _check_size(len(raw))
    try:
        data = loads(raw)
    except WireError as exc:
        raise InvalidEvent([f"event: {exc}"]) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent([f"event: must be valid JSON ({_short(exc)})"]) from None
    if not isinstance(data, dict):
        raise InvalidEvent([f"event: must be a JSON object, not {type(data).__name__}"])
    _check_text(data)
    return data


def _check_text(data: Mapping[str, Any]) -> None:
    """Every key and string must be storable text: valid UTF-8, no NUL characters."""
    bad = [str(key) for key, value in data.items() if not _storable(key) or not _storable(value)]
    if bad:
        names = ", ".join(storable_text(name) for name in bad)
        raise InvalidEvent([f"{names}: must be valid UTF-8 text without NUL characters"])


def _storable(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" not in value and _encodes(value)
    if depth > 64:
        return True
    if isinstance(value, Mapping):
        return all(_storable(k) and _storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_storable(v, depth + 1) for v in value)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    """Text PostgreSQL accepts: lone surrogates escaped, NUL characters spelled out."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _checked_size(obj: Mapping[str, Any]) -> tuple[str, int]:
    """obj as JSON and its size in bytes; raises naming the fields whose text is not storable.

    One encode answers both for almost every event: JSON spells a NUL character `\\u0000`, and
    a lone surrogate fails to encode as UTF-8; only then are the fields looked at one by one.
    """
    try:
        text = dumps(obj)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        _check_text(obj)
        raise InvalidEvent([f"event: must be JSON-serialisable ({_short(exc)})"]) from None
    if "\\u0000" in text:
        _check_text(obj)
    return text, size


def _check_size(size: int) -> None:
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent([f"event: must be at most {MAX_EVENT_BYTES} bytes of JSON (got {size})"])


def _model_for(data: Mapping[str, Any]) -> type[Envelope]:
    event_type = data.get("eventType", data.get("event_type"))
    model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if model is not None:
        return model
    rule = f"eventType: must be one of {', '.join(EVENT_TYPES)}"
    if event_type is None:
        rule = f"eventType: is required (one of {', '.join(EVENT_TYPES)})"
    raise InvalidEvent([rule, *_envelope_problems(data)])


def _envelope_problems(data: Mapping[str, Any]) -> list[str]:
    try:
        Envelope.model_validate({**_with_placeholder_id(data), "eventType": "-"})
    except ValidationError as exc:
        return _problems("event", exc)
    return []


def _with_placeholder_id(data: Mapping[str, Any]) -> dict[str, Any]:
    if "eventId" in data or "event_id" in data:
        return dict(data)
    return {**data, "eventId": _PLACEHOLDER_ID}


def _validate(model: type[Envelope], data: Mapping[str, Any]) -> Event:
    try:
        return model.model_validate(_with_placeholder_id(data))  # type: ignore[return-value]
    except ValidationError as exc:
        raise InvalidEvent(_problems(model.__name__, exc)) from None
    except RecursionError:
        raise InvalidEvent([f"{model.__name__}: input is nested too deeply"]) from None


def _problems(prefix: str, exc: ValidationError) -> list[str]:
    return [f"{prefix}.{_location(err['loc'])}: {_rule(err)}" for err in exc.errors()]


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not str(part).startswith(("function-", "constrained-", "lax-", "json-")):
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "event"


_RULES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": "must be one of {expected}",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
}


def _rule(err: Mapping[str, Any]) -> str:
    if err["type"] == "string_too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    template = _RULES.get(err["type"])
    if template is not None:
        return template.format(**err.get("ctx", {}))
    message = str(err.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def raw_text(obj: Any) -> str:
    """Best-effort text of an untrusted message, for dead letters (never raises)."""
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).decode("utf-8", errors="replace")
    if isinstance(obj, str):
        return obj
    try:
        return dumps(obj)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(repr(obj))
