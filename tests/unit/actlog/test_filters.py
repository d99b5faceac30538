"""RecordFilter: the one value that says which records a read selects."""

from __future__ import annotations

import pytest

from actlog import RecordFilter
from actlog.filters import MAX_MS


def test_an_empty_filter_selects_everything_and_fills_a_request_with_the_wire_defaults():
    assert RecordFilter().empty
    assert RecordFilter().request_fields() == {
        "model": "", "labels": {}, "since_ms": 0, "until_ms": 0,
    }  # fmt: skip
    where = RecordFilter("m", {"hallucinated": "true"}, 5, 9)
    assert not where.empty
    assert where.request_fields() == {
        "model": "m", "labels": {"hallucinated": "true"}, "since_ms": 5, "until_ms": 9,
    }  # fmt: skip
    assert where.with_labels(judge="rule").labels == {"hallucinated": "true", "judge": "rule"}


def test_keywords_build_a_filter_but_never_beside_one():
    assert RecordFilter.of(model="m", labels=None) == RecordFilter(model="m")
    where = RecordFilter(model="m")
    assert RecordFilter.of(where) is where
    with pytest.raises(ValueError, match="not both"):
        RecordFilter.of(where, since_ms=3)


@pytest.mark.parametrize(
    "bad",
    [{"since_ms": -1}, {"until_ms": MAX_MS + 1}, {"since_ms": "5"}, {"labels": {"k": 1}}],
)
def test_values_the_wire_cannot_carry_are_refused(bad):
    with pytest.raises(ValueError):
        RecordFilter(**bad)
