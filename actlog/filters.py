"""Which stored records a read selects: one value for list, features, probes and exports.

    RecordFilter(model="m", labels={"hallucinated": "true"}, since_ms=t0)

Every condition given must hold: the record's model, each label key with exactly this value,
`created_at_ms` in [since_ms, until_ms). The storage service applies it (ListRecords,
Features); an empty filter selects every record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Times are unsigned 64-bit on the wire and compared as signed in places: bounded here.
MAX_MS = 2**63 - 1


@dataclass(frozen=True)
class RecordFilter:
    model: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("since_ms", "until_ms"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value <= MAX_MS):
                raise ValueError(f"{name} must be Unix ms, >= 0 and <= {MAX_MS}: {value!r}")
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in self.labels.items()):
            raise ValueError(f"labels must map strings to strings: {dict(self.labels)!r}")
        object.__setattr__(self, "labels", dict(self.labels))

    @classmethod
    def of(cls, where: RecordFilter | None = None, **conditions: Any) -> RecordFilter:
        """`where`, or a filter of keyword `conditions` (model=, labels=, since_ms=,
        until_ms=; None = no condition); both only when they do not overlap."""
        given = {k: v for k, v in conditions.items() if v is not None and v != {}}
        if where is None:
            return cls(**given)
        if given:
            raise ValueError(f"give a RecordFilter or {', '.join(given)}, not both")
        return where

    @property
    def empty(self) -> bool:
        return self == RecordFilter()

    def request_fields(self) -> dict[str, Any]:
        """The filter's fields of a ListRecords or Features request."""
        return {
            "model": self.model or "",
            "labels": dict(self.labels),
            "since_ms": self.since_ms or 0,
            "until_ms": self.until_ms or 0,
        }

    def with_labels(self, **labels: str) -> RecordFilter:
        return replace(self, labels={**self.labels, **labels})
