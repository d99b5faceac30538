"""How well each layer's control-vector direction separates a concept on held-out pairs.

The pairs are split once (seeded shuffle) into train and held-out pairs, the same split for
every layer. Per layer, a direction is trained on the train pairs (`train_direction`) and
measured on the held-out ones:

- accuracy: repe's pairwise measure, the share of held-out pairs whose positive projects
  strictly above its negative (0.5 is chance);
- AUROC of the projection over the held-out prompts, positives labelled 1 and negatives 0
  (it also asks whether one threshold separates prompts of different pairs);
- stability: the cosine between directions trained on two disjoint halves of the train
  pairs. Its sign is kept: the orientation rule already points both at the positives, so a
  negative cosine means the halves disagree on the concept.

Recommendation rule: the layers whose held-out accuracy is within `margin` (default 0.02) of
the best layer's, ranked by accuracy, then AUROC, then stability (then the lower index); the
first is `best_layer`. `recommended_layers` lists them in that order.

The control (`shuffled_labels=True`, or `shuffle_labels`) swaps positive and negative within
a seeded random half of the pairs before anything else. A direction then has no consistent
label to find, so accuracy and AUROC should sit near 0.5; a report that looks good under the
control says the measure, not the concept, is doing the work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from actlog.repe.control_vector import METHODS, Method, PairHiddens, project_pairs, train_direction

DEFAULT_HELDOUT_FRACTION = 0.25
DEFAULT_MARGIN = 0.02
# Training needs two disjoint halves of at least 2 pairs each (pca_diff centers the
# differences, so one pair gives no direction) and at least one pair must be held out.
MIN_TRAIN_PAIRS = 4
# The label swap draws from its own stream so that which pairs are swapped does not depend on
# which are held out (both are seeded by the same `seed`).
_SHUFFLE_STREAM = 1
RECOMMENDATION_RULE = (
    "layers whose held-out pairwise accuracy is within margin of the best, ranked by accuracy, "
    "then AUROC, then stability, then lower layer index; best_layer is the first"
)


@dataclass(frozen=True)
class PairSplit:
    """Pair indices: `train` and `heldout` partition the pairs; `halves` split `train` in two
    disjoint parts for the stability measure."""

    train: np.ndarray
    heldout: np.ndarray
    halves: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LayerSeparation:
    """One layer's held-out measures (see the module docstring)."""

    layer: int
    accuracy: float
    auroc: float
    stability: float


@dataclass
class SeparationReport:
    """Per-layer rows, the recommendation and what it was computed from."""

    method: str
    rows: list[LayerSeparation]
    best_layer: int
    recommended_layers: list[int]
    n_pairs: int
    n_train: int
    n_heldout: int
    heldout_fraction: float
    seed: int
    shuffled_labels: bool
    margin: float
    recommendation_rule: str = field(default=RECOMMENDATION_RULE)

    def row(self, layer: int) -> LayerSeparation:
        for row in self.rows:
            if row.layer == layer:
                return row
        raise KeyError(layer)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        """The report as JSON: method, rows (layer, accuracy, auroc, stability per layer),
        best_layer, recommended_layers (best first), n_pairs, n_train, n_heldout,
        heldout_fraction, seed, shuffled_labels, margin and recommendation_rule."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def plot(self, path: str | Path) -> None:
        """A PNG of accuracy, AUROC and stability against layer, chance at 0.5, recommended
        layers shaded and the best one starred."""
        layers = [row.layer for row in self.rows]
        # A bare Figure on the Agg canvas: no pyplot, so no global backend or figure state.
        figure = Figure(figsize=(8, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for layer in self.recommended_layers:
            axes.axvspan(layer - 0.4, layer + 0.4, color="tab:green", alpha=0.12, linewidth=0)
        for name, color in (("accuracy", "tab:blue"), ("auroc", "tab:orange")):
            axes.plot(layers, [getattr(r, name) for r in self.rows], "o-", color=color, label=name)
        axes.plot(
            layers, [r.stability for r in self.rows], "s--", color="tab:gray", label="stability"
        )
        best = self.row(self.best_layer)
        axes.plot(
            [best.layer],
            [best.accuracy],
            "*",
            color="tab:red",
            markersize=16,
            label=f"best layer {best.layer}",
        )
        axes.axhline(0.5, color="black", linewidth=0.8, linestyle=":", label="chance")
        axes.set_xlabel("layer (hidden_states index)")
        axes.set_ylabel("held-out measure / cosine")
        axes.set_ylim(min(-0.05, min(r.stability for r in self.rows) - 0.05), 1.05)
        control = ", shuffled-labels control" if self.shuffled_labels else ""
        axes.set_title(
            f"{self.method}{control}: {self.n_train} train / {self.n_heldout} held-out pairs "
            f"(shaded: recommended)"
        )
        axes.legend(loc="best", fontsize="small")
        figure.savefig(str(path), format="png", dpi=100)


def split_pairs(
    n_pairs: int, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, seed: int = 0
) -> PairSplit:
    """A seeded shuffle of the pair indices, cut into held-out (`round(n * fraction)`, at
    least 1) and train pairs, the train pairs cut again into two halves."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    n_heldout = max(1, round(n_pairs * heldout_fraction))
    n_train = n_pairs - n_heldout
    if n_train < MIN_TRAIN_PAIRS:
        raise ValueError(
            f"a separation report needs at least {MIN_TRAIN_PAIRS} train pairs (two halves of 2 "
            f"for the stability measure) besides the held-out ones; {n_pairs} pairs with "
            f"heldout_fraction {heldout_fraction} leave {n_train}. Add pairs or hold out fewer."
        )
    order = np.random.default_rng(seed).permutation(n_pairs)
    train = order[n_heldout:]
    first, second = np.array_split(train, 2)
    return PairSplit(train=train, heldout=order[:n_heldout], halves=(first, second))


def shuffle_labels(hiddens: Mapping[int, PairHiddens], seed: int = 0) -> dict[int, PairHiddens]:
    """The control: positive and negative swapped within a seeded random half of the pairs,
    the same pairs at every layer (a pair's prompts are the same at each layer)."""
    n_pairs = _pair_count(hiddens)
    swap = np.random.default_rng([seed, _SHUFFLE_STREAM]).random(n_pairs) < 0.5
    shuffled = {}
    for layer, (positive, negative) in hiddens.items():
        mask = swap[:, None]
        shuffled[layer] = (np.where(mask, negative, positive), np.where(mask, positive, negative))
    return shuffled


def _pair_count(hiddens: Mapping[int, PairHiddens]) -> int:
    if not hiddens:
        raise ValueError("no layers")
    counts = {layer: (pos.shape, neg.shape) for layer, (pos, neg) in hiddens.items()}
    n_pairs = {pos[0] for pos, _ in counts.values()}
    if len(n_pairs) != 1 or any(pos != neg or len(pos) != 2 for pos, neg in counts.values()):
        raise ValueError(
            "every layer needs positive and negative arrays of the same (n_pairs, hidden) "
            f"shape and the same pairs; got {counts}"
        )
    return n_pairs.pop()


def pairwise_accuracy(positive_projection: np.ndarray, negative_projection: np.ndarray) -> float:
    """Share of pairs whose positive projects strictly above its negative."""
    return float(np.mean(positive_projection > negative_projection))


def projection_auroc(positive_projection: np.ndarray, negative_projection: np.ndarray) -> float:
    """AUROC of the projection as a score for "positive prompt" over all given prompts."""
    scores = np.concatenate([positive_projection, negative_projection])
    labels = np.concatenate([np.ones(len(positive_projection)), np.zeros(len(negative_projection))])
    return float(roc_auc_score(labels, scores))


def _layer_separation(
    layer: int, positive: np.ndarray, negative: np.ndarray, split: PairSplit, method: Method
) -> LayerSeparation:
    direction = train_direction(positive[split.train], negative[split.train], method)
    pos, neg = project_pairs(positive[split.heldout], negative[split.heldout], direction)
    first, second = (
        train_direction(positive[half], negative[half], method) for half in split.halves
    )
    stability = float(np.dot(first.astype(np.float64), second.astype(np.float64)))
    return LayerSeparation(
        layer=layer,
        accuracy=pairwise_accuracy(pos, neg),
        auroc=projection_auroc(pos, neg),
        stability=stability,
    )


def recommend_layers(rows: list[LayerSeparation], margin: float = DEFAULT_MARGIN) -> list[int]:
    """The recommendation rule (module docstring): best first."""
    if not rows:
        raise ValueError("no layers to recommend from")
    best_accuracy = max(row.accuracy for row in rows)
    ranked = sorted(rows, key=lambda r: (-r.accuracy, -r.auroc, -r.stability, r.layer))
    return [row.layer for row in ranked if row.accuracy >= best_accuracy - margin]


def separation_report(
    hiddens: Mapping[int, PairHiddens],
    method: Method = "pca_diff",
    *,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    seed: int = 0,
    shuffled_labels: bool = False,
    margin: float = DEFAULT_MARGIN,
    progress: bool = True,
) -> SeparationReport:
    """Train and measure a direction per layer on one seeded train/held-out split.

    `hiddens` maps layer -> (positive (n, hidden), negative (n, hidden)), row k = pair k at
    every layer. `shuffled_labels` runs the control (labels swapped within a random half of
    the pairs, seeded by `seed`). Raises ValueError when there are too few pairs.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    n_pairs = _pair_count(hiddens)
    split = split_pairs(n_pairs, heldout_fraction, seed)
    if shuffled_labels:
        hiddens = shuffle_labels(hiddens, seed)
    rows = []
    for layer in tqdm(sorted(hiddens), desc=f"separation {method}", disable=not progress):
        positive, negative = hiddens[layer]
        try:
            rows.append(_layer_separation(layer, positive, negative, split, method))
        except ValueError as error:
            raise ValueError(f"layer {layer}: {error}") from error
    recommended = recommend_layers(rows, margin)
    return SeparationReport(
        method=method,
        rows=rows,
        best_layer=recommended[0],
        recommended_layers=recommended,
        n_pairs=n_pairs,
        n_train=len(split.train),
        n_heldout=len(split.heldout),
        heldout_fraction=heldout_fraction,
        seed=seed,
        shuffled_labels=shuffled_labels,
        margin=margin,
    )
