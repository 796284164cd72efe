"""Times as the API shows them: UTC, RFC 3339 with milliseconds and ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$"
)
#: the DateTime of clause 4.6.3: seconds present, UTC written as a trailing "Z", no offset
_UTC_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def now_iso() -> str:
    # isoformat is C code: a third cheaper than format_datetime, and every request asks
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_datetime(text: object) -> datetime | None:
    """A timezone-aware datetime for a valid RFC 3339 / ISO 8601 date-time, else None.

    Lenient (offsets, no seconds): for reading parameters; payload members use
    ``parse_utc_datetime``.
    """
    if not isinstance(text, str) or not _DATETIME.match(text):
        return None
    raw = text[:-1] + "+00:00" if text.endswith("Z") else text
    frac = re.search(r"\.(\d+)", raw)
    if frac and len(frac.group(1)) > 6:  # Python keeps microseconds only
        raw = raw.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_utc_datetime(text: object) -> datetime | None:
    """Like ``parse_datetime`` but only for the form payloads must use (clause 4.6.3).

    Stored timestamps are compared as strings, so an offset form would sort wrongly; the
    spec rules it out rather than have brokers convert it.
    """
    if not isinstance(text, str) or not _UTC_DATETIME.match(text):
        return None
    return parse_datetime(text)


def normalize_datetime(text: str) -> str | None:
    """The canonical form of a date-time string, or None when it is not one."""
    parsed = parse_datetime(text)
    return format_datetime(parsed) if parsed else None


def is_date(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def is_time(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        time.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        return False
    return True
