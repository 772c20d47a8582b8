"""Retrieval and verification metrics over L2-normalised embeddings (cosine = dot product)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score

from core.embedding.templates import templates, unit_rows


def top1(similarity: np.ndarray, gallery_names: Sequence[str], query_labels: Sequence[str]) -> np.ndarray:
    """Boolean per query: does the most similar gallery entry carry the query's label?"""
    best = np.asarray(gallery_names)[similarity.argmax(axis=1)]
    return best == np.asarray(query_labels)


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float, genuine_weight: np.ndarray | None = None,
               impostor_weight: np.ndarray | None = None) -> tuple[float, float]:
    """(TAR, threshold): the threshold lets through at most `far` of impostor pairs. With weights,
    each pair counts that many times (evaluation/clean_guard.py resamples people so); NaN where a
    kind of pair is missing or weighs nothing."""
    if len(impostor) == 0 or len(genuine) == 0:
        return float("nan"), float("nan")
    g_weight = np.ones(len(genuine)) if genuine_weight is None else genuine_weight
    order = np.argsort(-impostor, kind="stable")  # most similar first; stable sorts presorted pairs in linear time
    cumulative = np.cumsum(np.ones(len(impostor)) if impostor_weight is None else impostor_weight[order])
    if not cumulative[-1] or not g_weight.sum():
        return float("nan"), float("nan")
    k = int(np.searchsorted(cumulative, far * cumulative[-1], side="right"))  # impostor weight allowed above the threshold
    threshold = float(impostor[order[min(k, len(order) - 1)]])
    return float(np.sum(g_weight * (genuine > threshold)) / g_weight.sum()), threshold


def verification(genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float] = (1e-2, 1e-3)) -> dict:
    """{n_genuine, n_impostor, tar@far=F, threshold@far=F}; read it with `tar_at` and `threshold_at`."""
    out: dict[str, float] = {"n_genuine": int(len(genuine)), "n_impostor": int(len(impostor))}
    for far in fars:
        out[_key("tar", far)], out[_key("threshold", far)] = tar_at_far(genuine, impostor, far)
    return out


def _key(what: str, far: float) -> str:
    return f"{what}@far={far:g}"


def tar_at(verification: dict, far: float) -> float:
    return float(verification[_key("tar", far)])


def threshold_at(verification: dict, far: float) -> float:
    return float(verification[_key("threshold", far)])


def retrieval_report(
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    gallery_sources: Sequence[str],
    queries: np.ndarray,
    query_labels: Sequence[str],
    query_kinds: Sequence[str],
    query_sources: Sequence[str],
) -> dict:
    """The whole evaluation from embeddings: top-1 overall and per kind, macro-F1, verification,
    and top-1 with each query's own source photo left out of the gallery."""
    tmpl, names = templates(gallery, gallery_labels)
    sim = queries @ tmpl.T
    hits = top1(sim, names, query_labels)
    predicted = np.asarray(names)[sim.argmax(axis=1)]
    per_kind: dict[str, list[bool]] = defaultdict(list)
    for kind, hit in zip(query_kinds, hits):
        per_kind[kind].append(bool(hit))

    name_index = {n: i for i, n in enumerate(names)}
    own = np.array([name_index[label] for label in query_labels])
    genuine = sim[np.arange(len(own)), own]
    impostor_mask = np.ones_like(sim, dtype=bool)
    impostor_mask[np.arange(len(own)), own] = False

    return {
        "top1": float(hits.mean()) if len(hits) else float("nan"),
        "per_distortion": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
        "n_queries": int(len(query_labels)),
        "n_identities": len(names),
        "macro_f1": float(f1_score(query_labels, predicted, labels=names, average="macro", zero_division=0)),
        "verification": verification(genuine, sim[impostor_mask]),
        "source_left_out": source_left_out(gallery, gallery_labels, gallery_sources, queries, query_labels, query_sources,
                                           query_kinds),
        "clean_verification": clean_verification(gallery, gallery_labels),
    }


def source_left_out(
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    gallery_sources: Sequence[str],
    queries: np.ndarray,
    query_labels: Sequence[str],
    query_sources: Sequence[str],
    query_kinds: Sequence[str] | None = None,
) -> dict:
    """Top-1 when the query's own clean photo is not in the gallery: recognising the person,
    not the photo. Only identities with 2+ clean photos can be scored this way. With the
    queries' kinds, also per distortion."""
    labels = np.asarray(gallery_labels)
    sources = np.asarray(gallery_sources)
    counts = Counter(gallery_labels)
    tmpl, names = templates(gallery, gallery_labels)
    sums = {n: gallery[labels == n].sum(axis=0) for n in names}
    hits: list[bool] = []
    per_kind: dict[str | None, list[bool]] = defaultdict(list)
    kinds: Sequence[str | None] = query_kinds if query_kinds is not None else [None] * len(query_labels)
    for q, label, source, kind in zip(queries, query_labels, query_sources, kinds):
        if counts[label] < 2:
            continue
        own = gallery[(labels == label) & (sources == source)].sum(axis=0)
        reduced = tmpl.copy()
        i = names.index(label)
        reduced[i] = unit_rows((sums[label] - own)[None])[0]
        hits.append(names[int(np.argmax(reduced @ q))] == label)
        per_kind[kind].append(hits[-1])
    out: dict = {"top1": float(np.mean(hits)) if hits else float("nan"), "n_queries": len(hits)}
    if query_kinds is not None:
        out["per_distortion"] = {k: float(np.mean(v)) for k, v in sorted(per_kind.items(), key=lambda kv: str(kv[0]))}
    return out


def clean_verification(gallery: np.ndarray, gallery_labels: Sequence[str]) -> dict:
    """Clean-vs-clean pairs: guards against fine-tuning that forgets ordinary photos."""
    labels = np.asarray(gallery_labels)
    sim = gallery @ gallery.T
    upper = np.triu(np.ones_like(sim, dtype=bool), k=1)
    same = labels[:, None] == labels[None, :]
    return verification(sim[upper & same], sim[upper & ~same])
