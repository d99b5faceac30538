"""From a concept's prompt pairs to a control vector and its separation report.

The pairs are captured (in-process or through the stack, `capture.py`); each prompt's
last-token hidden state is read at every chosen layer (the position repeng and repe read);
the report measures, on held-out pairs, how well a direction trained on the rest separates
positives from negatives; the vector itself is trained on every pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actlog.repe.capture import Layers, Server, capture_from_concept
from actlog.repe.control_vector import (
    ControlVector,
    GGUFExport,
    Method,
    PairHiddens,
    make_metadata,
    train_directions,
)
from actlog.repe.separation import SeparationReport, separation_report

POSITION = "last token"


@dataclass
class ConceptVector:
    vector: ControlVector
    report: SeparationReport
    # The same measures with each pair's labels swapped at random: what chance looks like
    # here (held-out accuracy near 0.5). A report close to its control separates nothing.
    control: SeparationReport
    data: dict[str, Any]  # the contrastive capture it came from

    @property
    def control_accuracy(self) -> float:
        """The shuffled-label control's mean held-out accuracy over layers."""
        return float(np.mean([row.accuracy for row in self.control.rows]))


def last_token_hiddens(data: dict[str, Any]) -> dict[int, PairHiddens]:
    """{layer: (positive (n, hidden), negative (n, hidden))} of a contrastive capture."""
    hiddens = {}
    for layer in data["captured_layers"]:
        pos = np.stack([d["activations"][layer][0, -1].numpy() for d in data["positive"]])
        neg = np.stack([d["activations"][layer][0, -1].numpy() for d in data["negative"]])
        hiddens[layer] = (pos.astype(np.float32), neg.astype(np.float32))
    return hiddens


def train_concept_vector(
    model: Any,
    tokenizer: Any,
    concept: str | None = None,
    layers: Layers = "recommended",
    method: Method = "pca_diff",
    server: Server = None,
    concept_file: str | None = None,
    max_samples: int | None = None,
    heldout_fraction: float = 0.25,
    seed: int = 0,
) -> ConceptVector:
    """Capture the pairs, report their separation per layer, train the vector on all."""
    data = capture_from_concept(
        model, tokenizer, concept or "", layers, max_samples, server=server,
        concept_file=concept_file,
    )  # fmt: skip
    hiddens = last_token_hiddens(data)
    report = separation_report(hiddens, method, heldout_fraction=heldout_fraction, seed=seed)
    control = separation_report(
        hiddens, method, heldout_fraction=heldout_fraction, seed=seed, shuffled_labels=True,
        progress=False,
    )  # fmt: skip
    directions = train_directions(hiddens, method, progress=True)
    record_ids = [d["record_id"] for d in data["positive"] + data["negative"] if "record_id" in d]
    first = data["positive"][0]
    metadata = make_metadata(
        model=data["model"],
        method=method,
        layers=sorted(directions),
        hidden_size=int(first["activations"][data["captured_layers"][0]].shape[-1]),
        dataset_name=data["concept"],
        dataset_sha256=data["dataset_sha256"],
        model_type=model_type_of(model, data["model"]),
        num_layers=data["num_layers"],
        position=POSITION,
        record_ids=record_ids or None,
        engine=data["engine"],
        num_pairs=str(len(data["positive"])),
        best_layer=str(report.best_layer),
        recommended_layers=json.dumps(report.recommended_layers),
    )
    return ConceptVector(ControlVector(directions, metadata), report, control, data)


@dataclass(frozen=True)
class WrittenFiles:
    safetensors: Path
    gguf: Path
    report_json: Path
    report_png: Path
    control_json: Path
    export: GGUFExport


def write_concept_vector(result: ConceptVector, prefix: str | Path) -> WrittenFiles:
    """PREFIX.safetensors, PREFIX.gguf, PREFIX.report.json, PREFIX.report.png and
    PREFIX.control.json (the shuffled-label control's report)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    extensions = (".safetensors", ".gguf", ".report.json", ".report.png", ".control.json")
    files = {ext: Path(f"{prefix}{ext}") for ext in extensions}
    result.vector.save_safetensors(files[".safetensors"])
    export = result.vector.export_gguf(
        files[".gguf"], model_hint=result.vector.metadata.get("model_type") or None
    )
    result.report.to_json(files[".report.json"])
    result.report.plot(files[".report.png"])
    result.control.to_json(files[".control.json"])
    return WrittenFiles(*files.values(), export)


def model_type_of(model: Any, name: str) -> str:
    """repeng's model hint: the architecture family (e.g. "llama") of the model here, or of
    the served one when its config is at hand (the default model's always is)."""
    if model is not None:
        return str(model.config.model_type)
    from transformers import AutoConfig

    from actlog_common.default_model import is_default, prepare_default_model

    try:
        source = str(prepare_default_model()) if is_default(name) else name
        return str(AutoConfig.from_pretrained(source, local_files_only=True).model_type)
    except (OSError, ValueError):
        return name  # a hint only: llama.cpp does not read it
