"""One metadata condition (month, hour, audio source, caption source), validated once.

A field left as None leaves that metadata out (it is masked in the fusion and stored as NULL).
Every entry point builds a :class:`Condition` (the command line with :meth:`Condition.parse`,
the dashboard from its widgets, the ranking and embedding APIs from their callers), so the
values are checked in one place and carried as one value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psm_model.metadata import (
    AUDIO_SOURCES,
    CAPTION_SOURCES,
    audio_source_index,
    caption_source_index,
    check_hour,
    check_month,
)

FIELDS: tuple[str, ...] = ("month", "hour", "audio_source", "caption_source")
"""The fields of a condition, in the order of the SQL functions' arguments."""

PARSE_KEYS: dict[str, str] = {
    "month": "month", "hour": "hour",
    "audio": "audio_source", "audio_source": "audio_source",
    "caption": "caption_source", "caption_source": "caption_source",
}
"""The keys :meth:`Condition.parse` accepts and the field each sets."""

_SHORT = {"month": "month", "hour": "hour", "audio_source": "audio", "caption_source": "caption"}
_NONE = "none"
"""The text of the condition that leaves every metadata out (an empty text parses the same)."""
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
"""Short month names, January first (how labels show a month)."""


def _range_error(name: str, value: object, lo: int, hi: int) -> ValueError:
    if isinstance(value, int) and not isinstance(value, bool):
        return ValueError(f"{name} {value} is out of range: {name} must be in {lo}..{hi}, or leave it out")
    return ValueError(f"{name} must be in {lo}..{hi} (a whole number), or leave it out; got {value!r}")


@dataclass(frozen=True)
class Condition:
    """A metadata condition; None leaves that metadata type out.

    Construction validates and normalises (a source name is matched case-insensitively and
    stored in lower case), so a Condition that exists is a valid one.

    Raises:
        ValueError: a month outside 1..12, an hour outside 0..23, or an unknown audio or
            caption source; the message says which and what is allowed.
    """

    month: int | None = None
    hour: int | None = None
    audio_source: str | None = None
    caption_source: str | None = None

    def __post_init__(self) -> None:
        try:
            month = check_month(self.month)
        except (TypeError, ValueError):
            raise _range_error("month", self.month, 1, 12) from None
        try:
            hour = check_hour(self.hour)
        except (TypeError, ValueError):
            raise _range_error("hour", self.hour, 0, 23) from None
        audio = audio_source_index(self.audio_source)
        caption = caption_source_index(self.caption_source)
        object.__setattr__(self, "month", month)
        object.__setattr__(self, "hour", hour)
        object.__setattr__(self, "audio_source", None if audio is None else AUDIO_SOURCES[audio])
        object.__setattr__(self, "caption_source", None if caption is None else CAPTION_SOURCES[caption])

    # ------------------------------------------------------------------ text forms

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``month=5,hour=20,audio=inaturalist,caption=metadata``.

        Any part may be left out; keys are ``month``, ``hour``, ``audio`` (or ``audio_source``)
        and ``caption`` (or ``caption_source``), in any case, with spaces around parts allowed;
        an empty source value leaves it out. An empty text, or ``none``, leaves every metadata out.

        Raises:
            ValueError: on an unknown key, a part without ``=``, a month or hour that is not a
                whole number, or a value :class:`Condition` refuses.
        """
        values: dict[str, Any] = {}
        if text.strip().lower() == _NONE:
            return cls()
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in PARSE_KEYS:
                raise ValueError(
                    f"bad condition part {part!r} in {text!r}; use month=1..12, hour=0..23, "
                    f"audio={'|'.join(AUDIO_SOURCES)}, caption={'|'.join(CAPTION_SOURCES)} "
                    "(comma-separated, any of them left out)"
                )
            name = PARSE_KEYS[key]
            value = value.strip()
            if name in ("month", "hour"):
                try:
                    values[name] = int(value)
                except ValueError:
                    lo, hi = (1, 12) if name == "month" else (0, 23)
                    raise ValueError(
                        f"{key} must be an integer in {lo}..{hi}, got {value!r} in the condition {text!r}"
                    ) from None
            else:
                values[name] = value or None
        return cls(**values)

    def __str__(self) -> str:
        """The form :meth:`parse` reads, e.g. ``month=5,hour=20,audio=inaturalist``; ``none`` when empty."""
        parts = [f"{_SHORT[name]}={value}" for name, value in self.as_dict().items() if value is not None]
        return ",".join(parts) or _NONE

    def label(self) -> str:
        """Readable summary, e.g. ``May · 20:00 · inaturalist · caption source left out``."""
        return " · ".join([
            MONTHS[self.month - 1] if self.month is not None else "month left out",
            f"{self.hour:02d}:00" if self.hour is not None else "hour left out",
            self.audio_source or "audio source left out",
            self.caption_source or "caption source left out",
        ])

    # ------------------------------------------------------------------ conversions

    def sql_args(self) -> tuple[int | None, int | None, str | None, str | None]:
        """(month, hour, audio_source, caption_source): the condition arguments of the SQL functions."""
        return self.month, self.hour, self.audio_source, self.caption_source

    def as_dict(self) -> dict[str, Any]:
        """The four fields by name (the JSON form of a job's conditions)."""
        return dict(zip(FIELDS, self.sql_args(), strict=True))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Condition:
        """Rebuild from :meth:`as_dict` (missing fields are left out).

        Raises:
            ValueError: on a key that is not a field, or a value :class:`Condition` refuses.
        """
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown condition field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> Condition:
        """A copy with some fields changed (validated again)."""
        return Condition.from_dict({**self.as_dict(), **changes})


__all__ = ["FIELDS", "MONTHS", "PARSE_KEYS", "Condition"]
