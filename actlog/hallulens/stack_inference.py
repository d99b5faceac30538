"""Inference through the stack's gateway as HalluLens sends it, and labels on the records.

HalluLens (utils/exp.py, utils/lm.py) sends each prompt as one user message to
chat.completions with temperature 0, top_p 1 and max_tokens 256, 64 at a time. Here capture
is on, so the gateway names the record of every answer; that record id is kept with the
answer in generation.jsonl, and the evaluation labels exactly those records (never a
prompt-hash lookup: a re-run of the same prompts makes new records under the same hash).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.concurrent import thread_map

from actlog.client import StorageClient
from actlog_common.layers import LayerError, LayerSpec

BENCHMARK = "hallulens_nonsense_mixed_entities"
MAX_TOKENS = 256  # HalluLens' NonsenseNameInference.run_inference


def chat_client(server: str, api_key: str = "unused", timeout: float = 600.0) -> Any:
    import openai

    base = server.rstrip("/")
    return openai.OpenAI(
        base_url=base if base.endswith("/v1") else f"{base}/v1",
        api_key=api_key,
        timeout=timeout,
        max_retries=2,
    )


def served_models(client: Any) -> list[str]:
    """The ids of the models the gateway serves."""
    return [m.id for m in client.models.list().data]


def matching_model(asked: str, served: list[str]) -> str | None:
    """The served id `asked` names: itself, or a hub id whose last part is served (the stack
    serves `org/name` under `name`)."""
    for name in (asked, asked.rstrip("/").split("/")[-1]):
        if name in served:
            return name
    return None


def generate(
    rows: list[dict[str, Any]],
    server: str,
    model: str | None = None,
    threads: int = 64,
    desc: str = "inference through the gateway",
    capture_layers: str = "",
) -> list[dict[str, Any]]:
    """`rows` with `generation`, `record_id` and `prompt_hash` added, in order.

    `capture_layers`: "last", "all", "recommended" or comma-separated layer numbers
    (negative from the end); "" = the server's default (CAPTURE_DEFAULT_LAYERS).
    """
    client = chat_client(server)
    model = model or served_models(client)[0]
    capture: dict[str, Any] = {"capture": True}
    if capture_layers:
        capture["capture_layers"] = parse_capture_layers(capture_layers)

    def ask(row: dict[str, Any]) -> dict[str, Any]:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": row["prompt"]}],
            temperature=0.0,
            top_p=1.0,
            max_tokens=MAX_TOKENS,
            extra_body=capture,
        )
        refs = (reply.model_extra or {}).get("activations") or []
        ref = refs[0] if refs else {}
        return {
            **row,
            "generation": reply.choices[0].message.content or "",
            "record_id": (ref.get("record_ids") or [""])[0],
            "prompt_hash": ref.get("prompt_hash", ""),
        }

    try:
        return list(thread_map(ask, rows, max_workers=threads, desc=desc))
    finally:
        client.close()


def parse_capture_layers(spec: str) -> str | list[int]:
    """The gateway's `capture_layers` for a flag value: a preset name, or a list of ints."""
    try:
        layers = LayerSpec.parse(spec, default="last")
    except LayerError as error:
        raise ValueError(f"--capture_layers: {error}") from None
    return layers.preset or list(layers.indices)


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def label_records(
    storage: str,
    labelled: Iterable[tuple[str, Mapping[str, str]]],
    desc: str = "labels on the records",
    wait_s: float = 120.0,
) -> int:
    """Set each (record id, labels) pair in storage, waiting for records still on their way
    (captures are stored after the answer); returns how many records were labelled."""
    items = [(rid, labels) for rid, labels in labelled if rid]
    with StorageClient(storage) as client:
        for record_id, labels in tqdm(items, desc=desc, unit="record"):
            client.wait_for_record_id(record_id, wait_s)
            client.set_labels(record_id, dict(labels))
    return len(items)


def answer_labels(
    item: Mapping[str, Any], exp: str, judge: str, refused: bool | None, hallucinated: bool | None
) -> dict[str, str]:
    """The labels of one answer's record (`unparsed` where the judge gave no verdict)."""

    def flag(value: bool | None) -> str:
        return "unparsed" if value is None else str(value).lower()

    return {
        "benchmark": BENCHMARK,
        "exp": exp,
        "entity_type": str(item["type"]),
        "name": str(item["name"]),
        "judge": judge,
        "refused": flag(refused),
        "hallucinated": flag(hallucinated),
    }
