"""Capture through the served stack: the gateway runs the prompts, storage keeps the rows.

Prompts go to the gateway's /v1/completions (the official openai client) with capture on
and one generated token, several per request so that vLLM batches them; the response names
each prompt's record ids, and the rows come back from storage by id
(`actlog.client.StorageClient`). Every capture is therefore durable: it can be read again,
labelled or exported by its record id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from actlog.client import Record, StorageClient
from actlog_common.defaults import STORAGE_ADDR
from actlog_common.hashing import prompt_hash

# Prompts per completions request: vLLM batches them; the gateway allows 64 by default.
PROMPTS_PER_REQUEST = 32


@dataclass(frozen=True)
class ServedCapture:
    """One prompt's stored record and its prompt rows at the chosen layers."""

    record: Record
    activations: dict[int, np.ndarray]  # layer -> (prompt tokens, hidden), float32


class ServedStack:
    """A running stack: the gateway at `server` (e.g. http://127.0.0.1:8000) and storage."""

    def __init__(
        self,
        server: str,
        storage: str = STORAGE_ADDR,
        api_key: str = "unused",
        timeout: float = 600.0,
        store_timeout: float = 120.0,
    ) -> None:
        import openai

        base = server.rstrip("/")
        self.server = base
        self._openai = openai.OpenAI(
            base_url=base if base.endswith("/v1") else f"{base}/v1",
            api_key=api_key,
            timeout=timeout,
            max_retries=2,
        )
        self._storage = StorageClient(storage, timeout=timeout)
        self._store_timeout = store_timeout
        self._model: str | None = None
        self._num_layers: int | None = None

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._openai.models.list().data[0].id
        return self._model

    def close(self) -> None:
        self._storage.close()
        self._openai.close()

    def __enter__(self) -> ServedStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def capture(
        self, prompts: list[str], layers: list[int] | str, progress: bool = True
    ) -> list[ServedCapture]:
        """Each prompt's prompt rows at `layers` (indices or a preset), in prompt order."""
        refs: list[str] = []
        batches = range(0, len(prompts), PROMPTS_PER_REQUEST)
        for start in tqdm(
            batches, desc="prompts to the gateway", unit="batch", disable=not progress
        ):
            refs += self._submit(prompts[start : start + PROMPTS_PER_REQUEST], layers)
        captures = []
        for record_id in tqdm(refs, desc="rows from storage", unit="record", disable=not progress):
            record = self._storage.wait_for_record_id(record_id, self._store_timeout, 0.05)
            arrays = self._storage.get_activations(record, row_end=record.prompt_length)
            captures.append(ServedCapture(record, arrays))
        return captures

    def _submit(self, prompts: list[str], layers: list[int] | str) -> list[str]:
        """Record ids of `prompts` (one each), in order, from one completions request."""
        reply = self._openai.completions.create(
            model=self.model,
            prompt=prompts,
            max_tokens=1,
            temperature=0,
            extra_body={"capture": True, "capture_layers": layers},
        )
        refs: Any = (reply.model_extra or {}).get("activations") or []
        by_hash: dict[str, list[str]] = {}
        for ref in refs:
            by_hash.setdefault(ref["prompt_hash"], []).extend(ref["record_ids"])
        ids = []
        for prompt in prompts:
            pending = by_hash.get(prompt_hash(prompt))
            if not pending:
                raise RuntimeError(
                    f"the gateway returned no record for prompt {prompt[:60]!r}: is capture "
                    "turned off on the server (CAPTURE_DEFAULT)?"
                )
            ids.append(pending.pop(0))
        return ids
