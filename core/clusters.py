"""Grouping faces nobody enrolled into clusters, one person per cluster as far as their
embeddings can tell: hierarchical clustering on cosine distance, the linkage and where to cut it
chosen on real photos of people never trained on (evaluation/real_photos.py, docs/privacy.md).

Complete linkage merges two groups only while every face of one is within the cut of every face
of the other. On the choose people it put the most of a person's faces together while 95% of the
faces stayed in clusters of one person; single linkage chains different people together through
a few look-alike photos (one cluster of nearly everyone), average linkage was a close second."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

Linkage = Literal["single", "average", "complete"]
# Chosen on the choose people: see docs/privacy.md, "Unknown faces".
LINKAGE: Linkage = "complete"
MAX_DISTANCE = 0.45  # cosine distance, 1 - similarity; chosen with the shipped model's embeddings


def cluster(vectors: np.ndarray, max_distance: float = MAX_DISTANCE, method: Linkage = LINKAGE) -> np.ndarray:
    """A cluster label (0, 1, ...) per unit vector; labels are ordered by each cluster's first member."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    distances = np.clip(pdist(np.asarray(vectors, dtype=np.float64), metric="cosine"), 0.0, 2.0)
    raw = fcluster(linkage(distances, method=method), t=max_distance, criterion="distance")
    first: dict[int, int] = {}
    for label in raw:
        first.setdefault(int(label), len(first))
    return np.array([first[int(label)] for label in raw], dtype=np.int64)


def purity_and_completeness(labels: np.ndarray, people: np.ndarray) -> dict[str, float]:
    """How well clusters match people: the share of clusters holding one person only (and of the
    faces in such clusters: one cluster of everyone beside pure singletons scores well on the
    first, not on the second), and the mean share of a person's faces in their largest cluster."""
    clusters = {int(c): people[labels == c] for c in np.unique(labels)}
    pure = {c: len(set(members.tolist())) == 1 for c, members in clusters.items()}
    shares = []
    for person in np.unique(people):
        mine = labels[people == person]
        shares.append(np.bincount(mine).max() / len(mine))
    return {"clusters": len(clusters), "people": int(len(np.unique(people))), "pure_clusters": float(np.mean(list(pure.values()))),
            "faces_in_pure_clusters": float(np.mean([pure[int(c)] for c in labels])), "largest_cluster_share": float(np.mean(shares))}
