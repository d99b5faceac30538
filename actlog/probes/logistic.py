"""Linear probes per layer: logistic regression on standardized features, scored on
held-out folds.

For each layer: ``StandardScaler`` then ``LogisticRegressionCV`` (L2, the inverse
regularization C chosen by an inner stratified cross-validation on log-loss), fitted on the
training folds of an outer ``StratifiedGroupKFold`` and scored on the records it never saw.
Records of one prompt share a group, so a prompt asked twice is never on both sides of a
split. Every figure comes from the out-of-fold predictions of all records: AUROC with a
percentile bootstrap interval, accuracy and balanced accuracy at probability 0.5. The
control refits the same probe on shuffled labels: a probe that finds structure there
memorizes, and its AUROC should stay near 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

INNER_FOLDS = 3
CS = np.logspace(-4, 2, 7)  # candidate C values (inverse regularization strength)


class ProbeDataError(ValueError):
    """Labels a probe cannot be trained and evaluated on (too few of a class)."""


@dataclass(frozen=True)
class LayerScore:
    layer: int
    auroc: float
    auroc_ci: tuple[float, float]
    accuracy: float
    balanced_accuracy: float
    chosen_c: float  # median over the outer folds
    control_auroc: float | None  # the same probe on shuffled labels

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def check_classes(y: np.ndarray, groups: Sequence[str], folds: int) -> dict[str, int]:
    """Class counts; ProbeDataError unless each class has `folds` distinct prompts."""
    counts = {"positive": int(y.sum()), "negative": int((~y).sum())}
    for name, members in (("positive", y), ("negative", ~y)):
        prompts = len({g for g, m in zip(groups, members, strict=True) if m})
        if prompts < folds:
            raise ProbeDataError(
                f"the {name} class has {counts[name]} record(s) over {prompts} distinct "
                f"prompt(s); {folds}-fold evaluation needs at least {folds}: label more "
                "records, or lower --folds"
            )
    return counts


def out_of_fold_scores(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    folds: int,
    seed: int,
    class_weight: str | None = None,
) -> tuple[np.ndarray, list[float]]:
    """P(positive) of every record from a probe that did not train on it; the C chosen
    in each outer fold."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = np.empty(len(y), dtype=np.float64)
    chosen: list[float] = []
    for train, test in outer.split(x, y, groups):
        inner_folds = min(INNER_FOLDS, int(y[train].sum()), int((~y[train]).sum()))
        probe = make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                Cs=CS,
                cv=StratifiedKFold(max(2, inner_folds), shuffle=True, random_state=seed),
                scoring="neg_log_loss",  # a proper score: calibrated probabilities
                l1_ratios=(0.0,),  # plain L2
                class_weight=class_weight,
                max_iter=2000,
                use_legacy_attributes=False,
            ),
        )
        probe.fit(x[train], y[train])
        scores[test] = probe.predict_proba(x[test])[:, 1]
        chosen.append(float(np.ravel(probe[-1].C_)[0]))
    return scores, chosen


def bootstrap_auroc(
    y: np.ndarray, scores: np.ndarray, rounds: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC over records (resamples of one class only
    are drawn again)."""
    from sklearn.metrics import roc_auc_score

    if rounds <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    while len(values) < rounds:
        pick = rng.integers(0, len(y), len(y))
        if y[pick].all() or not y[pick].any():
            continue
        values.append(roc_auc_score(y[pick], scores[pick]))
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def fit_probe(
    x: np.ndarray, y: np.ndarray, c: float, class_weight: str | None = None
) -> tuple[np.ndarray, float]:
    """The probe fitted on every record at inverse regularization `c`, folded back into the
    raw feature space: (weight, bias) with P(positive) = sigmoid(x @ weight + bias)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, class_weight=class_weight, max_iter=2000)
    model.fit(scaler.transform(x), y)
    coef = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - coef @ scaler.mean_)
    return coef.astype(np.float32), bias


def score_layer(
    layer: int,
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    *,
    folds: int = 5,
    bootstrap: int = 1000,
    control: bool = True,
    seed: int = 0,
    class_weight: str | None = None,
) -> LayerScore:
    """The held-out figures of a probe of `y` (bool per record) on `x` (records x hidden).

    `class_weight="balanced"` weighs each class inversely to its size (for rare classes:
    the accuracy at 0.5 then means something); None weighs every record alike.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    scores, chosen = out_of_fold_scores(x, y, groups, folds, seed, class_weight)
    predicted = scores >= 0.5
    control_auroc = None
    if control:
        shuffled = np.random.default_rng(seed + 1).permutation(y)
        control_scores, _ = out_of_fold_scores(x, shuffled, groups, folds, seed, class_weight)
        control_auroc = float(roc_auc_score(shuffled, control_scores))
    return LayerScore(
        layer=layer,
        auroc=float(roc_auc_score(y, scores)),
        auroc_ci=bootstrap_auroc(y, scores, bootstrap, seed),
        accuracy=float(accuracy_score(y, predicted)),
        balanced_accuracy=float(balanced_accuracy_score(y, predicted)),
        chosen_c=float(np.median(chosen)),
        control_auroc=control_auroc,
    )
