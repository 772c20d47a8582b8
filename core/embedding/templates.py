"""A person's template: what a query face is compared with when the person has several faces
enrolled — the normalised mean of their faces' unit embeddings, one definition for the gallery's
search, `/verify` against a person and every evaluation.

A different photo of a person lands nearer the mean of their enrolled photos than the nearest
of them does, and a stranger's photo hardly nearer: on real photos the template names more of a
person's new photos than their best face at the same threshold, and far more at the same
stranger rate (docs/results.md, "Several photos of a person: one template"). With one face
enrolled the template is that face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to length one (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def template(faces: np.ndarray) -> np.ndarray:
    """One person's N×D unit embeddings → their D-dimensional unit template (float32)."""
    return unit_rows(np.asarray(faces, dtype=np.float64).sum(axis=0, keepdims=True))[0].astype(np.float32)


def templates(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """One template per person (rows in the order of the sorted names), and the names."""
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    sums = np.zeros((len(names), embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, [index[label] for label in labels], embeddings)
    return unit_rows(sums).astype(np.float32), names
