"""Linear probes: how well a frozen representation separates labels, by a logistic regression on
standardised features. The analysis cross-validates one on the test features (probes.py); the
evaluation fits one on a support set and scores it on a query set (transfer.py)."""

from __future__ import annotations

import numpy as np


def linear_probe(max_iter: int):
    """An unfitted probe: standardisation, then a logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))


def cross_validated_accuracy(
    features: np.ndarray, labels: np.ndarray, seed: int = 0, folds: int = 5, max_iter: int = 500
) -> float:
    """Mean accuracy over stratified folds (fewer where a class has fewer images; nan below 2)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(folds, int(np.bincount(labels).min()))
    if folds < 2:
        return float("nan")  # a class with one image: nothing to cross-validate
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(linear_probe(max_iter), features, labels, cv=cv).mean())


def held_out_accuracy(
    support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray,
    max_iter: int = 1000,
) -> float:  # fmt: skip
    """Accuracy on the query set of a probe fitted on the support set."""
    return float(linear_probe(max_iter).fit(support, support_labels).score(query, query_labels))
