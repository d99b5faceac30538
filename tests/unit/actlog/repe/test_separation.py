"""The separation report: held-out accuracy, AUROC and stability per layer, and its control.

Synthetic pairs over layers 0..8 share one planted concept direction per layer; the concept
is strong at layer 5, weak at its neighbours and absent elsewhere, so a sound report picks
layer 5, and the shuffled-labels control must fall to chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actlog.repe.control_vector import METHODS
from actlog.repe.separation import (
    RECOMMENDATION_RULE,
    LayerSeparation,
    SeparationReport,
    recommend_layers,
    separation_report,
    shuffle_labels,
    split_pairs,
)

HIDDEN = 16
N_PAIRS = 200
PLANTED_LAYER = 5
STRENGTH = {PLANTED_LAYER: 3.0, PLANTED_LAYER - 1: 0.3, PLANTED_LAYER + 1: 0.3}
LAYERS = range(9)


def planted_hiddens(seed: int = 0, n_pairs: int = N_PAIRS) -> dict[int, tuple]:
    """Per layer (positive, negative): a topic per pair orthogonal to the layer's concept
    direction, +- half the pair's concept strength along it, and noise."""
    rng = np.random.default_rng(seed)
    hiddens = {}
    for layer in LAYERS:
        direction = rng.normal(size=HIDDEN)
        direction /= np.linalg.norm(direction)
        topic = rng.normal(scale=2.0, size=(n_pairs, HIDDEN))
        topic -= np.outer(topic @ direction, direction)
        strength = STRENGTH.get(layer, 0.0) * rng.uniform(0.5, 2.0, size=(n_pairs, 1))
        noise = rng.normal(scale=0.2, size=(2, n_pairs, HIDDEN))
        positive = topic + strength / 2 * direction + noise[0]
        negative = topic - strength / 2 * direction + noise[1]
        hiddens[layer] = (positive.astype(np.float32), negative.astype(np.float32))
    return hiddens


@pytest.fixture(scope="module")
def hiddens() -> dict[int, tuple]:
    return planted_hiddens()


@pytest.mark.parametrize("method", METHODS)
def test_the_planted_layer_is_best_and_separates_held_out_pairs(hiddens: dict, method: str) -> None:
    report = separation_report(hiddens, method, progress=False)
    assert report.best_layer == PLANTED_LAYER
    assert report.recommended_layers[0] == PLANTED_LAYER
    best = report.row(PLANTED_LAYER)
    assert best.accuracy >= 0.95
    assert best.auroc >= 0.95
    assert best.stability >= 0.9
    assert [row.layer for row in report.rows] == list(LAYERS)
    assert (report.n_pairs, report.n_train, report.n_heldout) == (200, 150, 50)


@pytest.mark.parametrize("method", METHODS)
def test_with_shuffled_labels_the_report_falls_to_chance(hiddens: dict, method: str) -> None:
    """The control: the same measures, on labels that carry no concept, must fail."""
    report = separation_report(hiddens, method, shuffled_labels=True, progress=False)
    accuracies = [row.accuracy for row in report.rows]
    aurocs = [row.auroc for row in report.rows]
    assert report.shuffled_labels
    assert abs(np.mean(accuracies) - 0.5) <= 0.2
    assert abs(np.mean(aurocs) - 0.5) <= 0.2
    assert max(accuracies) < 0.8


def test_shuffle_labels_swaps_the_same_pairs_at_every_layer(hiddens: dict) -> None:
    shuffled = shuffle_labels(hiddens, seed=3)
    swapped = None
    for layer, (positive, negative) in hiddens.items():
        new_positive, new_negative = shuffled[layer]
        layer_swapped = ~np.all(new_positive == positive, axis=1)
        assert np.array_equal(new_positive[layer_swapped], negative[layer_swapped])
        assert np.array_equal(new_negative[layer_swapped], positive[layer_swapped])
        assert swapped is None or np.array_equal(layer_swapped, swapped)
        swapped = layer_swapped
    assert 0.3 < np.mean(swapped) < 0.7
    assert np.array_equal(shuffle_labels(hiddens, seed=3)[0][0], shuffled[0][0])
    assert not np.array_equal(shuffle_labels(hiddens, seed=4)[0][0], shuffled[0][0])


def test_split_is_seeded_disjoint_and_holds_out_a_quarter_by_default() -> None:
    split = split_pairs(10, seed=1)
    assert len(split.heldout) == round(10 * 0.25)
    assert sorted(np.concatenate([split.train, split.heldout])) == list(range(10))
    first, second = split.halves
    assert sorted(np.concatenate([first, second])) == sorted(split.train)
    assert not set(first) & set(second)
    again = split_pairs(10, seed=1)
    assert np.array_equal(again.heldout, split.heldout)
    assert not np.array_equal(split_pairs(10, seed=2).train, split.train)


def test_at_least_one_pair_is_held_out_and_too_few_pairs_are_refused() -> None:
    assert len(split_pairs(5, heldout_fraction=0.01).heldout) == 1
    with pytest.raises(ValueError, match="at least 4 train pairs"):
        split_pairs(4)
    with pytest.raises(ValueError, match="at least 4 train pairs"):
        separation_report(planted_hiddens(n_pairs=4), progress=False)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_pairs(100, heldout_fraction=1.0)


def test_layers_with_different_pairs_are_refused(hiddens: dict) -> None:
    uneven = {1: hiddens[1], 2: (hiddens[2][0][:-1], hiddens[2][1][:-1])}
    with pytest.raises(ValueError, match="same pairs"):
        separation_report(uneven, progress=False)


def test_recommendation_keeps_layers_within_the_margin_ranked_by_accuracy_auroc_stability() -> None:
    rows = [
        LayerSeparation(layer=3, accuracy=0.90, auroc=0.99, stability=0.9),
        LayerSeparation(layer=4, accuracy=0.95, auroc=0.97, stability=0.8),
        LayerSeparation(layer=5, accuracy=0.94, auroc=0.98, stability=0.9),
        LayerSeparation(layer=6, accuracy=0.95, auroc=0.97, stability=0.9),
    ]
    assert recommend_layers(rows, margin=0.02) == [6, 4, 5]
    assert recommend_layers(rows, margin=0.0) == [6, 4]


def test_json_has_the_documented_fields(hiddens: dict, tmp_path: Path) -> None:
    report = separation_report(hiddens, "mean_diff", seed=4, progress=False)
    path = tmp_path / "separation.json"
    report.to_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {
        "method",
        "rows",
        "best_layer",
        "recommended_layers",
        "n_pairs",
        "n_train",
        "n_heldout",
        "heldout_fraction",
        "seed",
        "shuffled_labels",
        "margin",
        "recommendation_rule",
    }
    assert data["method"] == "mean_diff" and data["seed"] == 4
    assert data["best_layer"] == PLANTED_LAYER
    assert data["recommendation_rule"] == RECOMMENDATION_RULE
    assert [set(row) for row in data["rows"]] == [
        {"layer", "accuracy", "auroc", "stability"} for _ in LAYERS
    ]


@pytest.mark.parametrize("shuffled", [False, True])
def test_plot_writes_a_png(hiddens: dict, tmp_path: Path, shuffled: bool) -> None:
    report: SeparationReport = separation_report(
        hiddens, "pca_diff", shuffled_labels=shuffled, progress=False
    )
    path = tmp_path / "separation.png"
    report.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
