"""A probe report from stored records: features pooled in storage, a label as the target.

from actlog import RecordFilter, StorageClient
from actlog.probes import Target, run_probe

with StorageClient() as client:
    report = run_probe(client, Target("hallucinated", "true"), layers="all",
                       pooling="last_prompt", where=RecordFilter(labels={"benchmark": "..."}))
report.best.layer, report.best.auroc
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from actlog.client import StorageClient
from actlog.features import Features
from actlog.filters import RecordFilter
from actlog.probes.logistic import LayerScore, ProbeDataError, check_classes, fit_probe, score_layer
from actlog_common.layers import LayerChoice

# Label values that are no verdict at all (the HalluLens task's judge could not parse one).
NO_VERDICT = ("unparsed",)


@dataclass(frozen=True)
class Target:
    """Records whose label `key` is `positive` are the positive class; those with
    `negative` (any other value when None, but `ignore`) the negative class."""

    key: str
    positive: str = "true"
    negative: str | None = None
    ignore: Sequence[str] = NO_VERDICT

    def classes(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """(kept records' indices, y) of `features`: y True for the positive class."""
        values = features.label(self.key, missing="\0")
        keep, y = [], []
        for index, value in enumerate(values):
            if value == "\0" or value in self.ignore:
                continue
            if value == self.positive:
                keep.append(index)
                y.append(True)
            elif self.negative is None or value == self.negative:
                keep.append(index)
                y.append(False)
        return np.array(keep, dtype=np.int64), np.array(y, dtype=bool)


@dataclass(frozen=True)
class ProbeReport:
    target: Target
    pooling: str
    filters: dict[str, Any]
    records: int  # selected and usable
    excluded: int  # without a usable value of the label
    skipped: int  # unusable for the features (partial, without the layers...)
    class_counts: dict[str, int]
    folds: int
    layers: list[LayerScore] = field(default_factory=list)
    class_weight: str | None = None
    model: str = ""
    # Per layer, the probe fitted on every record (at its median chosen C), in the raw
    # feature space: P(positive) = sigmoid(features @ weight + bias).
    weights: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)

    @property
    def best(self) -> LayerScore:
        return max(self.layers, key=lambda score: score.auroc)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.target.key,
            "positive": self.target.positive,
            "negative": self.target.negative,
            "ignored_values": list(self.target.ignore),
            "pooling": self.pooling,
            "filters": self.filters,
            "model": self.model,
            "records": self.records,
            "excluded_records": self.excluded,
            "skipped_records": self.skipped,
            "class_counts": self.class_counts,
            "folds": self.folds,
            "class_weight": self.class_weight,
            "probe": "StandardScaler + LogisticRegressionCV (L2, C by inner 3-fold log-loss), "
            "outer StratifiedGroupKFold grouped by prompt",
            "best_layer": self.best.layer,
            "best_auroc": self.best.auroc,
            "layers": [score.to_json() for score in self.layers],
        }

    def save(self, directory: Path) -> tuple[Path, Path]:
        """report.json, auroc_by_layer.png and probes.safetensors in `directory`."""
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / "report.json"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        png_path = directory / "auroc_by_layer.png"
        plot(self, png_path)
        tensors = {}
        for layer, (weight, bias) in self.weights.items():
            tensors[f"layer_{layer}.weight"] = weight
            tensors[f"layer_{layer}.bias"] = np.array([bias], dtype=np.float32)
        if tensors:
            metadata = {"label": self.target.key, "positive": self.target.positive,
                        "pooling": self.pooling, "model": self.model,
                        "rule": "P(positive) = sigmoid(features @ weight + bias)"}  # fmt: skip
            save_file(tensors, str(directory / "probes.safetensors"), metadata=metadata)
        return json_path, png_path


def run_probe(
    client: StorageClient,
    target: Target,
    layers: LayerChoice,
    pooling: str = "last_prompt",
    *,
    position: int = 0,
    where: RecordFilter | None = None,
    folds: int = 5,
    bootstrap: int = 1000,
    control: bool = True,
    seed: int = 0,
    class_weight: str | None = None,
    progress: bool = True,
    timeout: float = 3600.0,
) -> ProbeReport:
    """Pool the selected records' layers in storage, then probe each layer."""
    features = client.features(
        layers=layers,
        pooling=pooling,
        position=position,
        where=where,
        skip_unusable=True,
        timeout=timeout,
    )
    if not len(features):
        if features.skipped:
            raise ProbeDataError(
                f"none of the {len(features.skipped)} selected records can give these "
                f"features; the first: {features.skipped[0].reason}"
            )
        raise ProbeDataError("no records match the filters")
    keep, y = target.classes(features)
    groups = [features.prompt_hashes[i] for i in keep]
    counts = check_classes(y, groups, folds)
    scores = [
        score_layer(layer, features[layer][keep], y, groups, folds=folds, bootstrap=bootstrap,
                    control=control, seed=seed, class_weight=class_weight)
        for layer in tqdm(features.layers, desc="probes by layer", unit="layer",
                          disable=not progress)
    ]  # fmt: skip
    weights = {
        s.layer: fit_probe(features[s.layer][keep], y, s.chosen_c, class_weight) for s in scores
    }
    return ProbeReport(
        target=target,
        pooling=pooling if pooling != "position" else f"position {position}",
        filters=(where or RecordFilter()).request_fields(),
        records=len(features),
        excluded=len(features) - len(keep),
        skipped=len(features.skipped),
        class_counts=counts,
        folds=folds,
        layers=scores,
        class_weight=class_weight,
        model=", ".join(sorted(set(features.models))),
        weights=weights,
    )


def plot(report: ProbeReport, path: Path) -> None:
    """AUROC by layer with its bootstrap interval, and the shuffled-label control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [s.layer for s in report.layers]
    auroc = np.array([s.auroc for s in report.layers])
    low = np.array([s.auroc_ci[0] for s in report.layers])
    high = np.array([s.auroc_ci[1] for s in report.layers])
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(layers, auroc, marker="o", label="held-out AUROC")
    if np.isfinite(low).all():
        axes.fill_between(layers, low, high, alpha=0.25, label="95% bootstrap interval")
    controls = [s.control_auroc for s in report.layers]
    if all(c is not None for c in controls):
        axes.plot(layers, controls, marker="x", linestyle="--", color="grey",
                  label="shuffled-label control")  # fmt: skip
    axes.axhline(0.5, color="black", linewidth=0.8)
    best = report.best
    axes.annotate(f"best: layer {best.layer}, {best.auroc:.3f}", (best.layer, best.auroc),
                  textcoords="offset points", xytext=(0, 8), ha="center")  # fmt: skip
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("layer (0 = embeddings)")
    axes.set_ylabel("AUROC")
    counts = report.class_counts
    axes.set_title(
        f"{report.target.key}={report.target.positive} probe, {report.pooling} "
        f"({counts['positive']} pos / {counts['negative']} neg, {report.folds} folds)"
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
