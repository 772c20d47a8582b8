"""What a user of the service gets: open-set identification with the service's own rules.

The gallery holds every clean photo of the evaluated people, and a query is answered by the
person whose template (the normalised mean of their photos' embeddings) it is most similar to,
as `/identify` does. A query whose face the service's detection does not find (the data-set
pipeline had to fall back to a fixed box) is answered "no face". Every person is also a
stranger once: their queries are scored against the gallery without them, so the stranger
figures use every query rather than a few left-out people.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.stats import beta

from core.embedding.templates import templates

UNDETECTED_PATHS = frozenset({"fallback", "whole-image"})  # the service has neither
TARGET_STRANGER_RATE = 0.01
# The service's threshold must hold the target on people it was not chosen on: it is chosen so
# that the rate's upper confidence bound on the validation people stays at the target.
CONFIDENCE = 0.95


def scores(gallery: np.ndarray, gallery_labels: Sequence[str], queries: np.ndarray, query_labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Per query, against each person's template (core/embedding/templates.py, as the service
    searches): whether the top person is right, the top similarity (enrolled), and the top
    similarity once the query's own person is removed (as a stranger)."""
    tmpl, listed = templates(gallery, gallery_labels)
    best, names = queries @ tmpl.T, np.asarray(listed)
    own = np.searchsorted(names, np.asarray(query_labels))
    if not np.array_equal(names[np.minimum(own, len(names) - 1)], np.asarray(query_labels)):
        raise ValueError("every query's person must have a gallery photo")
    rows = np.arange(len(own))
    right = best.argmax(axis=1) == own
    top = best.max(axis=1)
    without_own = best.copy()
    without_own[rows, own] = -np.inf
    return {"right": right, "top": top, "stranger_top": without_own.max(axis=1)}


def rate_upper_bound(named: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Clopper-Pearson upper confidence bound of a rate seen as `named` of `n`."""
    return 1.0 if named >= n else float(beta.ppf(confidence, named + 1, n - named))


def threshold_for_stranger_rate(stranger_top: Sequence[float] | np.ndarray, rate: float = TARGET_STRANGER_RATE,
                                confidence: float | None = None) -> float:
    """The lowest threshold that names at most `rate` of strangers (a name needs similarity ≥ threshold);
    with `confidence`, the lowest whose upper confidence bound of that rate is at most `rate` (on too
    few strangers for any, one that names none of them). The box regressor's threshold follows the
    point rule, its face-free pictures' face probabilities standing for the strangers' similarities."""
    ordered = np.sort(stranger_top)[::-1]
    n = len(ordered)
    allowed = int(np.floor(rate * n))  # strangers that may be named
    if confidence is not None:
        while allowed > 0 and rate_upper_bound(allowed, n, confidence) > rate:
            allowed -= 1
    if allowed >= n:
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.float32(np.inf)))  # just above the first stranger that must not pass


def report(
    gallery: np.ndarray, gallery_labels: Sequence[str], queries: np.ndarray, query_labels: Sequence[str],
    query_kinds: Sequence[str], detected: Sequence[bool], threshold: float, flagged: Sequence[bool] | None = None,
    gone: Sequence[bool] | None = None,
) -> dict:
    """Per distortion and overall, at the service's `threshold`: enrolled people named
    correctly, strangers given a name; and the threshold that would hold strangers to the
    target rate on these queries with CONFIDENCE (choose it on validation people, report it on test
    people).
    `flagged`: queries whose face the quality check gave a reason; their figures are split out.
    `gone`: found faces the service does not name by face evidence (the quality check's `gone`);
    like faces not found, they are never named, and the threshold is chosen without them."""
    s = scores(gallery, gallery_labels, queries, query_labels)
    found = np.asarray(detected, dtype=bool)
    withheld = found & (np.zeros_like(found) if gone is None else np.asarray(gone, dtype=bool))
    nameable = found & ~withheld
    named_right = nameable & s["right"] & (s["top"] >= threshold)
    stranger_named = nameable & (s["stranger_top"] >= threshold)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, kind in enumerate(query_kinds):
        by_kind[kind].append(i)

    def figures(indices: Sequence[int] | np.ndarray) -> dict:
        idx = np.asarray(indices, dtype=int)
        share = lambda mask: float(mask[idx].mean()) if len(idx) else float("nan")  # an empty group (no flagged query) is NaN
        return {
            "n": int(len(idx)),
            "named_correctly": share(named_right),
            "strangers_named": share(stranger_named),
            "strangers_named_ucb95": rate_upper_bound(int(stranger_named[idx].sum()), len(idx)),
            "no_face": share(~found),
            "face_gone": share(withheld),
            "right_but_below_threshold": share(nameable & s["right"] & (s["top"] < threshold)),
            "wrong_name": share(nameable & ~s["right"] & (s["top"] >= threshold)),
        }

    return {
        "threshold": float(threshold),
        "target_stranger_rate": TARGET_STRANGER_RATE,
        # the rate's 95% upper bound at the target on these strangers (the rule the service's threshold follows)
        "threshold_for_target": threshold_for_stranger_rate(s["stranger_top"][nameable], confidence=CONFIDENCE) if nameable.any() else None,
        "threshold_for_target_point": threshold_for_stranger_rate(s["stranger_top"][nameable]) if nameable.any() else None,
        "overall": figures(range(len(query_labels))),
        "per_distortion": {kind: figures(idx) for kind, idx in sorted(by_kind.items())},
    } | ({} if flagged is None else {"by_quality": {
        "flagged": figures(np.flatnonzero(found & np.asarray(flagged, dtype=bool))),
        "not_flagged": figures(np.flatnonzero(found & ~np.asarray(flagged, dtype=bool))),
    }})
