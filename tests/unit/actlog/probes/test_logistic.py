"""The probe's held-out scoring on synthetic features: a real signal scores near 1, labels
with no relation to the features near 0.5, and too few examples are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from actlog.probes.logistic import ProbeDataError, check_classes, score_layer


def separable(n: int = 160, hidden: int = 24, shift: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    x = rng.standard_normal((n, hidden)).astype(np.float32)
    direction = rng.standard_normal(hidden)
    x += np.outer(y * shift, direction / np.linalg.norm(direction)).astype(np.float32)
    return x, y, [f"prompt-{i}" for i in range(n)]


def test_a_separable_layer_scores_near_one_and_its_shuffled_control_near_half() -> None:
    x, y, groups = separable()
    score = score_layer(7, x, y, groups, folds=5, bootstrap=200, control=True, seed=0)
    assert score.layer == 7
    assert score.auroc > 0.95
    assert score.auroc_ci[0] <= score.auroc <= score.auroc_ci[1]
    assert score.auroc_ci[0] > 0.85
    assert score.accuracy > 0.85 and score.balanced_accuracy > 0.85
    assert score.control_auroc is not None and abs(score.control_auroc - 0.5) < 0.15


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_labels_unrelated_to_the_features_score_about_half(seed: int) -> None:
    x, _, groups = separable(seed=seed)
    y = np.random.default_rng(100 + seed).random(len(x)) < 0.5
    score = score_layer(0, x, y, groups, folds=5, bootstrap=0, control=False, seed=seed)
    assert abs(score.auroc - 0.5) < 0.15
    assert score.control_auroc is None and np.isnan(score.auroc_ci[0])


def test_records_of_one_prompt_never_straddle_a_split() -> None:
    """Twenty prompts asked eight times each: memorizing a prompt cannot help on held-out
    folds, so labels that follow the prompt but not the features stay near 0.5."""
    rng = np.random.default_rng(5)
    prompts = np.repeat(np.arange(20), 8)
    x = rng.standard_normal((20, 16))[prompts] + 0.05 * rng.standard_normal((160, 16))
    y = rng.permutation(np.repeat([True, False], 10))[prompts]
    groups = [f"p{p}" for p in prompts]
    score = score_layer(0, x.astype(np.float32), y, groups, folds=5, bootstrap=0, control=False)
    assert score.auroc < 0.8


def test_too_few_examples_of_a_class_are_refused_with_the_counts() -> None:
    y = np.array([True, True, True] + [False] * 20)
    groups = [f"g{i}" for i in range(len(y))]
    with pytest.raises(ProbeDataError, match=r"positive class has 3 record\(s\).*needs at least 5"):
        check_classes(y, groups, folds=5)
    assert check_classes(y, groups, folds=3) == {"positive": 3, "negative": 20}
    # Five positive records, but of two prompts only.
    with pytest.raises(ProbeDataError, match="2 distinct prompt"):
        check_classes(
            np.array([True] * 5 + [False] * 9), ["a"] * 3 + ["b"] * 2 + list("cdefghijk"), 5
        )


def test_balanced_weights_make_the_rare_class_count_at_the_threshold() -> None:
    """Eight positives in 200: unweighted, the probe misses most of them at 0.5; with
    balanced class weights it finds more (balanced accuracy up)."""
    x, y, groups = separable(n=400, shift=4.0, seed=5)
    rare = np.flatnonzero(y)[:8]
    keep = np.concatenate([rare, np.flatnonzero(~y)[:192]])
    x, y, groups = x[keep], y[keep], [groups[i] for i in keep]
    plain = score_layer(0, x, y, groups, folds=4, bootstrap=0, control=False)
    balanced = score_layer(0, x, y, groups, folds=4, bootstrap=0, control=False,
                           class_weight="balanced")  # fmt: skip
    assert balanced.balanced_accuracy > plain.balanced_accuracy
    assert balanced.balanced_accuracy > 0.75
