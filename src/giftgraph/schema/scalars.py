"""The Decimal and Date scalars: each read from its one ASCII text form.

Strawberry's own parse with `Decimal()` and `date.fromisoformat()`, which also take
other scripts' digits, `1_000`, exponents, `NaN`, numbers that are not strings, week dates
and `20240101`. Here a value is refused (BAD_USER_INPUT, as any coercion error) unless it
is written as this service writes it.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from graphql import GraphQLError
from strawberry.types.scalar import ScalarDefinition

# A sign only for minus, no exponent, no `+`, no blanks: "19.99", "-3", "0.5".
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_DECIMAL_TEXT = 64  # far above NUMERIC(12, 2); keeps a huge string from being parsed


def parse_decimal(value: Any) -> Decimal:
    """A Decimal from its text; -0 is 0 (it would be answered "-0.00", then read "0.00")."""
    if not isinstance(value, str) or len(value) > MAX_DECIMAL_TEXT \
            or not _DECIMAL.fullmatch(value):
        raise GraphQLError('Decimal must be a string of ASCII digits with an optional "-" and'
                           ' decimal point, such as "19.99"')
    number = Decimal(value)
    return number.copy_abs() if number.is_zero() else number


def parse_date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise GraphQLError("Date must be a string YYYY-MM-DD of ASCII digits")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise GraphQLError("Date must be a real calendar date from year 1") from None


def decimal_text(value: Decimal) -> str:
    return str(value.copy_abs() if value.is_zero() else value)


DECIMAL = ScalarDefinition(
    name="Decimal",
    description='An exact decimal number (money), sent and received as a string of ASCII '
                'digits with an optional leading "-" and decimal point, such as "19.99"; no '
                'exponent, "+" or "_". Amounts come back with two decimal places.',
    specified_by_url=None,
    serialize=decimal_text,
    parse_value=parse_decimal,
    parse_literal=None,
    origin=Decimal,
)
DATE = ScalarDefinition(
    name="Date",
    description='A calendar date as a string "YYYY-MM-DD" of ASCII digits, such as '
                '"2025-12-24" (no time, no time zone).',
    specified_by_url=None,
    serialize=date.isoformat,
    parse_value=parse_date,
    parse_literal=None,
    origin=date,
)
SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {Decimal: DECIMAL, date: DATE}
