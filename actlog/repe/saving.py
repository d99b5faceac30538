"""`save_activations(data, prefix)`: `prefix.pt` with the tensors, `prefix.json` with the
metadata and per-layer statistics.

The .pt file holds only tensors, dicts, lists, strings and numbers, so plain
`torch.load(path)` opens it under torch's default `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from actlog.repe.stats import compute_activation_stats, compute_contrastive_diff

_METADATA = ("prompt", "tokens", "num_layers", "captured_layers", "model", "engine", "record_id")


def save_activations(data: dict[str, Any], prefix: str | Path) -> tuple[Path, Path]:
    """Write one capture or a contrastive capture; returns the two paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    pt_path, json_path = Path(f"{prefix}.pt"), Path(f"{prefix}.json")
    torch.save(data, pt_path)
    summary = _contrastive_summary(data) if "positive" in data else _capture_summary(data)
    json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return pt_path, json_path


def _capture_summary(data: dict[str, Any]) -> dict[str, Any]:
    summary = {key: data[key] for key in _METADATA if key in data}
    summary["shapes"] = {str(k): list(t.shape) for k, t in data["activations"].items()}
    summary["stats"] = {str(k): v for k, v in compute_activation_stats(data).items()}
    return summary


def _contrastive_summary(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("concept", "dataset_sha256", "num_layers", "captured_layers", "model", "engine")
    summary: dict[str, Any] = {key: data[key] for key in keys if key in data}
    summary["num_pairs"] = len(data["positive"])
    summary["pairs"] = [
        {
            "positive": _capture_summary(pos),
            "negative": _capture_summary(neg),
            "diff": {str(k): v for k, v in compute_contrastive_diff(pos, neg).items()},
        }
        for pos, neg in zip(data["positive"], data["negative"], strict=True)
    ]
    return summary
