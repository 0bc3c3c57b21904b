"""Classification metrics on label arrays (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "macro_f1"]


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((predicted == labels).mean()) if len(labels) else float("nan")


def macro_f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``labels`` or ``predicted``
    (scikit-learn's ``f1_score(average="macro")`` with its default ``labels``)."""
    scores = []
    for cls in range(num_classes):
        tp = np.sum((predicted == cls) & (labels == cls))
        fp = np.sum((predicted == cls) & (labels != cls))
        fn = np.sum((predicted != cls) & (labels == cls))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")
