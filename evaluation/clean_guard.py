"""The guard on clean verification, with how far it can be trusted.

Clean TAR at FAR 1e-3 rests on few pairs: 100 people give about 600 genuine pairs, most of them
from the few people with many clean photos, and the threshold on about 25 impostor pairs. So the
pairs are not independent draws, and a plain binomial interval would be far too narrow. The
interval here resamples the *people* (the bootstrap over identities): a person drawn k times
weighs k in their genuine pairs, and a pair of two people drawn k and m times weighs k·m.

With a baseline (the pretrained backbone the model was fine-tuned from, embedding the same
photos), the difference is resampled with the same people for both (paired): the guard asks
whether fine-tuning cost clean verification, and only a paired interval can say whether a
difference of 0.005 is there at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.metrics import tar_at_far

RESAMPLES = 2000
CONFIDENCE = 0.95


def _pairs(gallery: np.ndarray, people: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of distinct photos: (similarity, first person, second person)."""
    i, j = np.triu_indices(len(gallery), k=1)
    return (gallery @ gallery.T)[i, j], people[i], people[j]  # one product: no pair-by-dimension temporaries


class _WeightedTar:
    """TAR at a FAR for any weighting of the people (`tar_at_far` over the weighted pairs), the
    impostor pairs sorted once so that each draw's sort is linear."""

    def __init__(self, gallery: np.ndarray, people: np.ndarray, far: float) -> None:
        sims, a, b = _pairs(gallery, people)
        same = a == b
        self.far = far
        self.genuine, self.genuine_person = sims[same], a[same]
        order = np.argsort(-sims[~same], kind="stable")
        self.impostor, self.impostor_a, self.impostor_b = sims[~same][order], a[~same][order], b[~same][order]

    def __call__(self, weight: np.ndarray) -> float:
        """TAR with person p's photos counted weight[p] times: their genuine pairs weigh weight[p],
        an impostor pair of p and q weight[p]·weight[q]."""
        return tar_at_far(self.genuine, self.impostor, self.far, weight[self.genuine_person],
                          weight[self.impostor_a] * weight[self.impostor_b])[0]


def _interval(values: np.ndarray) -> list[float]:
    """The central CONFIDENCE interval of the resampled values that are defined."""
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    return np.percentile(values, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2]).tolist()


def clean_guard(gallery: np.ndarray, labels: Sequence[str], far: float = 1e-3, baseline: np.ndarray | None = None,
                resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Clean-vs-clean TAR at `far` and its interval over people (NaN where there are no pairs of a
    kind); with `baseline` (another model's embeddings of the same photos, in the same order) its
    TAR and the paired difference."""
    names, people = np.unique(np.asarray(labels), return_inverse=True)
    model = _WeightedTar(gallery, people, far)
    draws = np.random.default_rng(seed).multinomial(len(names), np.full(len(names), 1 / len(names)), size=resamples)
    ones = np.ones(len(names))
    resampled = np.array([model(w) for w in draws])
    out: dict = {"far": far, "people": int(len(names)), "genuine_pairs": int(len(model.genuine)), "resamples": resamples,
                 "confidence": CONFIDENCE, "tar": model(ones), "tar_interval": _interval(resampled)}
    if baseline is not None:
        base = _WeightedTar(baseline, people, far)
        out["baseline_tar"] = base(ones)
        out["difference"] = out["tar"] - out["baseline_tar"]
        out["difference_interval"] = _interval(resampled - np.array([base(w) for w in draws]))
    return out
