"""Celery's JSON in a worker, with numbers kept exact (models/wire.py's JsonNumber).

kombu's decoder makes a float of `12345678901234567.89`, which rounds it before any task sees
it; a producer in another language sends money as such a number. In a worker, JSON numbers
become JsonNumber (a float that keeps its text), and what the worker publishes again (a retry,
a decision) writes them as exact decimals.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.serialization import register
from kombu.utils import json as kombu_json
from orderfleet.models.wire import JsonNumber, exact_numbers

# One decoder for the process: json.loads with any option builds a new one per call (a third
# of the cost of decoding a message envelope).
_BODY = json.JSONDecoder(parse_float=JsonNumber, object_hook=kombu_json.object_hook)
_ENVELOPE = json.JSONDecoder(object_hook=kombu_json.object_hook)


def loads(text: Any) -> Any:
    """kombu's JSON decoding, numbers with a fraction or exponent as JsonNumber."""
    return kombu_json.loads(text, _loads=_decode_body)


def loads_envelope(text: str) -> Any:
    """kombu's JSON decoding of a transport envelope (its numbers are never money)."""
    return _ENVELOPE.decode(text)


def _decode_body(text: str, object_hook: Any = None) -> Any:
    """kombu passes its own object_hook, which _BODY already has."""
    return _BODY.decode(text)


def dumps(obj: Any) -> str:
    """kombu's JSON encoding, JsonNumbers as exact decimals."""
    return kombu_json.dumps(exact_numbers(obj))


def install() -> None:
    """Use these for `application/json` in this process (workers only)."""
    register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")
