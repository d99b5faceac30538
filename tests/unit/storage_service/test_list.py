"""ListRecords pages: short pages with a token when the scan or byte budget runs out."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage_service import queries
from storage_service.ingest import IngestSession
from storage_service.store import ActivationStore
from storage_service.testing import synthetic_record


@pytest.fixture
def store(tmp_path: Path):
    store = ActivationStore(tmp_path, 1 << 20)
    yield store
    store.close()


def ingest(store: ActivationStore, record) -> None:
    session = IngestSession(store)
    for request in record.requests(6):
        session.add(request)
    session.finish()


def walk(store: ActivationStore, **filters) -> tuple[list[list[str]], list[str]]:
    pages, token = [], ""
    while True:
        page, token = store.list_records(page_token=token, **filters)
        pages.append([h.record_id for h in page])
        if not token:
            return pages, [rid for p in pages for rid in p]


def test_short_pages_still_reach_every_match(store, monkeypatch) -> None:
    records = [synthetic_record(f"p{i}", seed=i, labels={"keep": str(i % 4 == 0)})
               for i in range(10)]  # fmt: skip
    for record in records:
        ingest(store, record)
    newest_first = [r.header.record_id for r in reversed(records)]
    kept = [rid for i, rid in zip(range(9, -1, -1), newest_first, strict=True) if i % 4 == 0]

    monkeypatch.setattr(queries, "LIST_SCAN_LIMIT", 3)
    pages, found = walk(store, labels={"keep": "True"}, page_size=10)
    assert found == kept
    assert len(pages) == 4 and [] in pages  # 3 records examined per call: some pages empty

    monkeypatch.setattr(queries, "LIST_SCAN_LIMIT", 20_000)
    monkeypatch.setattr(queries, "LIST_PAGE_BYTES", 1)
    pages, found = walk(store, page_size=10)
    assert found == newest_first and all(len(p) == 1 for p in pages)


def test_a_deleted_token_record_does_not_break_paging(store) -> None:
    records = [synthetic_record(f"d{i}", seed=i) for i in range(5)]
    for record in records:
        ingest(store, record)
    ids = [r.header.record_id for r in records]
    page, token = store.list_records(page_size=2)
    assert [h.record_id for h in page] == [ids[4], ids[3]] and token == ids[3]
    store.delete(token)
    rest, token = store.list_records(page_size=10, page_token=token)
    assert [h.record_id for h in rest] == [ids[2], ids[1], ids[0]] and token == ""
