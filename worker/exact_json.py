"""Celery's JSON in a worker, with numbers kept exact (models/wire.py's JsonNumber).

kombu's decoder makes a float of `12345678901234567.89`, which rounds it before any task sees
it; a producer in another language sends money as such a number. In a worker, JSON numbers
become JsonNumber (a float that keeps its text), and what the worker publishes again (a retry,
a decision) writes them as exact decimals.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from kombu.serialization import register
from kombu.utils import json as kombu_json
from orderfleet.models.wire import JsonNumber, exact_numbers

_parse = partial(json.loads, parse_float=JsonNumber)


def loads(text: Any) -> Any:
    """kombu's JSON decoding, numbers with a fraction or exponent as JsonNumber."""
    return kombu_json.loads(text, _loads=_parse)


def dumps(obj: Any) -> str:
    """kombu's JSON encoding, JsonNumbers as exact decimals."""
    return kombu_json.dumps(exact_numbers(obj))


def install() -> None:
    """Use these for `application/json` in this process (workers only)."""
    register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")
