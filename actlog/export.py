"""Export one record to a safetensors file, in its stored dtype.

Tensors: ``layer_<i>`` (rows x hidden_size; every position unless a row range is
asked) for each exported layer and ``token_ids`` (int64, 1-D, all of them). Metadata
(strings): prompt, response, model, prompt_length, prompt_hash, record_id, dtype,
num_positions, row_start, row_end, hidden_size, num_layers, layers (JSON), token_strings
(JSON), sampling_params (JSON), finish_reason, created_at_ms.

bfloat16 stays bfloat16 (safetensors "BF16"), so `safetensors.torch.load_file` gives the
tensors the model computed; numpy cannot read BF16, torch (or jax) can.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors

from actlog.client import Record, StorageClient, resolve_record_layers
from actlog.errors import InvalidArgumentError, NotFoundError
from actlog_common.dtypes import DTYPES
from actlog_common.hashing import is_prompt_hash
from actlog_common.ids import is_record_id
from actlog_common.layers import LayerChoice, LayerSpec

_NUMPY_ST_DTYPES = {np.dtype("<i8"): ("int64", "I64")}


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    record_id: str
    prompt_hash: str
    model: str
    layers: tuple[int, ...]
    num_positions: int
    hidden_size: int
    dtype: str
    file_bytes: int
    # Records that matched the prompt hash (and model); the newest one was exported.
    matched_records: int = 1
    note: str = ""
    rows: tuple[int, int] = (0, 0)  # the exported rows [start, end)


def export_record(
    client: StorageClient,
    key: str,
    output_path: str | os.PathLike[str],
    layers: LayerChoice = None,
    model: str | None = None,
    row_start: int = 0,
    row_end: int | None = None,
    force: bool = False,
) -> ExportSummary:
    """Write one record's activations and metadata to `output_path` (safetensors).

    An existing file at `output_path` is refused (FileExistsError) unless `force`; anything
    there that is not a regular file (a directory, a device, a symlink) always is. The file
    appears whole or not at all (written beside it, then renamed).

    `key` is a record id (32 hex chars) or a prompt hash (64 hex chars). A prompt hash
    may have several records: the newest COMPLETE one (of `model` when given) is exported
    and the summary says how many matched. `layers`, `row_start` and `row_end` as in
    `StorageClient.get_activations` (every stored layer, every row by default); the
    metadata says which rows (`row_start`, `row_end`), token ids and strings stay whole.
    """
    path = check_output_file(output_path, force)
    record, matched, note = _choose_record(client, key, model, layers)
    arrays = client.get_activations(
        record, layers=layers, row_start=row_start, row_end=row_end, as_float32=False
    )
    rows = (row_start, row_end or record.num_positions)
    tensors: dict[str, tuple[np.ndarray, str, str]] = {}
    for layer, raw in arrays.items():
        spec_name, tag = record.dtype, DTYPES[record.dtype].safetensors
        tensors[f"layer_{layer}"] = (np.ascontiguousarray(raw), spec_name, tag)
    token_ids = np.asarray(record.token_ids, dtype="<i8")
    tensors["token_ids"] = (token_ids, *_NUMPY_ST_DTYPES[token_ids.dtype])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _serialize_file(tensors, partial, _metadata(record, sorted(arrays), rows))
        check_output_file(path, force)  # again: something may have appeared meanwhile
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportSummary(
        path=path,
        record_id=record.record_id,
        prompt_hash=record.prompt_hash,
        model=record.model,
        layers=tuple(sorted(arrays)),
        num_positions=record.num_positions,
        hidden_size=record.hidden_size,
        dtype=record.dtype,
        file_bytes=path.stat().st_size,
        rows=rows,
        matched_records=matched,
        note=note,
    )


def check_output_file(output_path: str | os.PathLike[str], force: bool = False) -> Path:
    """`output_path` as a file to write, or OSError saying why not: an empty path, an
    existing file without `force`, or anything there that is not a regular file."""
    if not str(output_path).strip():
        raise FileNotFoundError("the output path is empty: give a file name")
    path = Path(output_path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        kind = (
            "a directory" if stat.S_ISDIR(mode)
            else "a symlink" if stat.S_ISLNK(mode)
            else "not a regular file"
        )  # fmt: skip
        raise FileExistsError(f"{path} is {kind}: give the path of a file to write")
    if not force:
        raise FileExistsError(f"{path} exists: pass --force to replace it")
    return path


def _has_layers(record: Record, layers: LayerChoice) -> bool:
    """Whether `record` stores every requested layer (negative ones count from its end)."""
    if layers is None:
        return True
    try:
        resolve_record_layers(record, layers)
    except InvalidArgumentError:
        return False
    return True


def _choose_record(
    client: StorageClient, key: str, model: str | None, layers: LayerChoice = None
) -> tuple[Record, int, str]:
    if is_record_id(key):
        return client.get_record(key), 1, ""
    if not is_prompt_hash(key):
        raise InvalidArgumentError(
            f"{key!r} is neither a record id (32 lowercase hex chars) nor a prompt hash "
            "(64 lowercase hex chars)"
        )
    complete = [r for r in client.find_by_prompt_hash(key, model=model) if r.is_complete]
    if not complete:
        of_model = f" of model {model!r}" if model else ""
        raise NotFoundError(f"no complete record{of_model} with prompt hash {key}")
    having = [r for r in complete if _has_layers(r, layers)]
    spec = LayerSpec.parse(layers)
    wanted = spec.preset or list(spec.indices)
    if not having:
        stored = "; ".join(f"{r.record_id}: {list(r.layers)}" for r in complete[:10])
        raise InvalidArgumentError(
            f"no complete record with prompt hash {key} stores layers {wanted}; records and "
            f"their layers: {stored}"
        )
    newest = having[0]
    note = ""
    if len(complete) > 1:
        which = "the newest" if newest is complete[0] else f"the newest with layers {wanted}"
        note = (
            f"{len(complete)} complete records share prompt hash {key}; exported {which}, "
            f"{newest.record_id} ({newest.model})"
        )
    return newest, len(complete), note


def _metadata(record: Record, layers: list[int], rows: tuple[int, int]) -> dict[str, str]:
    return {
        "row_start": str(rows[0]),
        "row_end": str(rows[1]),
        "record_id": record.record_id,
        "prompt_hash": record.prompt_hash,
        "prompt": record.prompt,
        "response": record.response,
        "model": record.model,
        "prompt_length": str(record.prompt_length),
        "num_positions": str(record.num_positions),
        "hidden_size": str(record.hidden_size),
        "num_layers": str(record.num_layers),
        "dtype": record.dtype,
        "layers": json.dumps(layers),
        "token_strings": json.dumps(list(record.token_strings), ensure_ascii=False),
        "sampling_params": json.dumps(record.sampling_params, ensure_ascii=False),
        "finish_reason": record.finish_reason,
        "created_at_ms": str(record.created_at_ms),
    }


def _serialize_file(
    tensors: dict[str, tuple[np.ndarray, str, str]], path: Path, metadata: dict[str, str]
) -> None:
    """Write raw buffers with a dtype safetensors' numpy front end cannot express (BF16).

    safetensors >= 0.8 takes `TensorSpec`s pointing at the buffers (kept alive here by
    `tensors` for the duration of the call); older releases take dicts of bytes.
    """
    spec_type: Any = getattr(safetensors, "TensorSpec", None)
    if spec_type is not None:
        flat = {
            name: spec_type(
                dtype=spec_name,
                shape=list(array.shape),
                data_ptr=array.ctypes.data,
                data_len=array.nbytes,
            )
            for name, (array, spec_name, _) in tensors.items()
        }
    else:
        flat = {
            name: {"dtype": tag, "shape": list(array.shape), "data": array.tobytes()}
            for name, (array, _, tag) in tensors.items()
        }
    safetensors.serialize_file(flat, str(path), metadata=metadata)
