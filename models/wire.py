"""Wire-level value rules shared by every event: money, instants, canonical JSON."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from json import encoder as json_encoder
from typing import Any

MAX_EVENT_BYTES = 64 * 1024
MAX_INTEGER_DIGITS = 18  # money: digits before the decimal point
MAX_FRACTION_DIGITS = 8  # money: significant digits after it
MAX_INT = 2**63 - 1  # counts and quantities: PostgreSQL bigint, exact in every JSON parser
MAX_PLAIN_IN_JSON = 64  # digits a decimal may take written out in stored JSON

_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?$", re.ASCII)
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,
)


_UTC_OFFSETS = frozenset({"Z", "z", "+00:00", "-00:00"})
_OFFSETS: dict[str, timezone] = {"Z": UTC, "z": UTC, "+00:00": UTC, "-00:00": UTC}


class WireError(ValueError):
    """A value broke a wire rule; the message is the rule, e.g. 'must be >= 0'."""


class JsonNumber(float):
    """A JSON number with a fraction or exponent, as a float that keeps its exact text.

    JSON decoders that are not ours (Celery's, kombu's) make floats of numbers, and a float
    rounds `12345678901234567.89`; this one behaves as a float everywhere and lets money be
    read from the text the producer sent.
    """

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def to_decimal(value: Any) -> Decimal:
    """Money as an exact Decimal: the JSON number 99.99 is Decimal('99.99')."""
    result = _exact_decimal(value)
    _check_plain_length(result)
    return result


def to_money(value: Any) -> Decimal:
    """Money: an exact decimal within the documented bounds (README, Guarantees)."""
    result = _exact_decimal(value)
    _check_bounds(result)
    return result


def _exact_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise WireError("must be a decimal number, not a boolean")
    if isinstance(value, JsonNumber):
        value = value.text
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise WireError("must be a finite decimal number")
        value = repr(value)
    try:
        result = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise WireError("must be a decimal number") from None
    if not result.is_finite():
        raise WireError("must be a finite decimal number")
    return result


def _check_bounds(value: Decimal) -> None:
    """At most MAX_INTEGER_DIGITS before the point and MAX_FRACTION_DIGITS after it."""
    _, digits, exponent = value.as_tuple()
    exponent = int(exponent)
    if -MAX_FRACTION_DIGITS <= exponent <= 0 and len(digits) + exponent <= MAX_INTEGER_DIGITS:
        return  # the usual money text such as 99.99: within both bounds as written
    if not any(digits):
        return
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    fraction = max(0, -exponent - trailing_zeros)
    integer = max(0, len(digits) + exponent)
    if integer > MAX_INTEGER_DIGITS:
        raise WireError(f"must have at most {MAX_INTEGER_DIGITS} digits before the decimal point")
    if fraction > MAX_FRACTION_DIGITS:
        raise WireError(f"must have at most {MAX_FRACTION_DIGITS} digits after the decimal point")


def _plain_length(value: Decimal) -> int:
    """Digits of the decimal written out in full (no exponent)."""
    _, digits, exponent = value.as_tuple()
    return len(digits) + abs(int(exponent))


def _check_plain_length(value: Decimal) -> None:
    """Written out in full (as documents do), a decimal must fit the event size limit."""
    _, digits, exponent = value.as_tuple()
    if len(digits) + abs(int(exponent)) > MAX_EVENT_BYTES:
        raise WireError(f"must have at most {MAX_EVENT_BYTES} digits when written out in full")


def to_instant(value: Any) -> datetime:
    """An RFC 3339 instant with an offset, in UTC, truncated to microseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise WireError("must carry a UTC offset (naive times are rejected)")
        return _to_utc(value)
    if not isinstance(value, str):
        raise WireError("must be an RFC 3339 timestamp string")
    match = _RFC3339.match(value.strip())
    if not match and _NAIVE.match(value.strip()):
        raise WireError("must carry a UTC offset such as Z or +02:00 (naive times are rejected)")
    if not match:
        raise WireError("must be an RFC 3339 timestamp with an offset, e.g. 2026-01-01T10:00:00Z")
    return _instant_from_match(match)


def _instant_from_match(match: re.Match[str]) -> datetime:
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    utc = offset in _UTC_OFFSETS  # the usual case: already UTC, no conversion
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micros,
            UTC if utc else None,
        )
    except ValueError as exc:
        raise WireError(f"is not a valid date/time ({exc})") from None
    return local if utc else _to_utc(local.replace(tzinfo=_offset(offset)))


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise WireError("is out of range once converted to UTC") from None


def _offset(text: str) -> timezone:
    known = _OFFSETS.get(text)
    if known is None:
        known = _OFFSETS[text] = _parsed_offset(text)  # a few dozen exist: kept
    return known


def _parsed_offset(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise WireError("has an invalid UTC offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with a Z; microseconds only when present."""
    if value.tzinfo is UTC:  # what to_instant gives: no conversion
        return value.isoformat()[:-6] + "Z"
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def format_decimal(value: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros: 100, 99.9. Exact:
    no rounding to the decimal context's precision."""
    _check_plain_length(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0") else text


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, decimals and instants normalised: the basis of derived ids."""
    canonical = _canonical(obj)
    if _encode_sorted is None:
        return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "".join(_encode_sorted(canonical, 0))


def _canonical(obj: Any) -> Any:
    kind = type(obj)
    if kind in PLAIN_JSON:  # plain values first, by type: this runs for every event's hash
        return obj
    if kind is dict:
        return {k if type(k) is str else str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Decimal):
        return format_decimal(obj)
    if isinstance(obj, datetime):
        return format_instant(obj)
    if isinstance(obj, float):
        return format_decimal(to_decimal(obj))
    return obj


PLAIN_JSON = frozenset({str, int, bool, type(None)})  # JSON values left as they are


def _reject_constant(name: str) -> Any:
    raise WireError(f"JSON constant {name} is not allowed (numbers must be finite)")


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping numbers exact (Decimal) and rejecting NaN/Infinity."""
    return json.loads(text, parse_float=to_decimal, parse_constant=_reject_constant)


def dumps(obj: Any) -> str:
    """JSON for storage and transport: decimals as strings, instants as RFC 3339.

    A JsonNumber is written as the exact text it was read from.
    """
    exact = exact_numbers(obj)
    if _encode is None:
        return _ENCODER.encode(exact)
    return "".join(_encode(exact, 0))


def dumps_built(obj: Any) -> str:
    """`dumps` for values the domain built (order documents, decisions, counts): they hold no
    JsonNumber (those come only from decoding a message; validation turns them into
    Decimals), so the walk that finds them, a tenth of a bulk worker's time, is skipped."""
    if _encode is None:
        return _ENCODER.encode(obj)
    return "".join(_encode(obj, 0))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # Written out in full when short (every bounded amount is); a number like 1e65000 in
        # an unknown field stays in exponent form instead of growing to 65 KB of zeros.
        return format_decimal(obj) if _plain_length(obj) <= MAX_PLAIN_IN_JSON else str(obj)
    if isinstance(obj, datetime):
        return format_instant(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False)
# The C encoder behind _ENCODER, made once: json builds one per call (measured: 4.9 -> 2.9 us
# for an event). No circular-reference check: a decoded document has no cycles (a cycle
# would end in RecursionError instead of ValueError).
_c_make_encoder = getattr(json_encoder, "c_make_encoder", None)  # CPython's C accelerator
_encode = (
    _c_make_encoder(
        None, _json_default, json_encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if _c_make_encoder is not None
    else None
)
# The same with sorted keys, for canonical_json (its input holds plain JSON values only).
_encode_sorted = (
    _c_make_encoder(
        None, _json_default, json_encoder.encode_basestring, None, ":", ",", True, False, True
    )
    if _c_make_encoder is not None
    else None
)


def exact_numbers(obj: Any) -> Any:
    """obj with every JsonNumber as the exact Decimal of its text."""
    kind = type(obj)
    if kind in _LEAVES:  # most values: nothing to walk (the common case first, by type)
        return obj
    if kind is dict:
        return {k: v if type(v) in _LEAVES else exact_numbers(v) for k, v in obj.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _LEAVES else exact_numbers(v) for v in obj]
    if isinstance(obj, JsonNumber):
        return Decimal(obj.text)
    if isinstance(obj, dict):
        return {k: exact_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [exact_numbers(v) for v in obj]
    return obj


_LEAVES = PLAIN_JSON | {Decimal, datetime}
