"""Metric code against cases computed by hand."""

from pathlib import Path

import numpy as np
import pytest

from core.data.dataset import Sample
from core.embedding.templates import templates
from evaluation.metrics import (
    retrieval_report,
    source_left_out,
    tar_at_far,
    top1,
)
from evaluation.report import face_left_report


def unit(*v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_templates_are_normalised_means():
    emb = np.stack([unit(1, 0), unit(0, 1), unit(1, 0)])
    tmpl, names = templates(emb, ["b", "b", "a"])
    assert names == ["a", "b"]
    assert np.allclose(tmpl[0], [1, 0])
    assert np.allclose(tmpl[1], unit(1, 1))


def test_top1_counts_nearest_gallery_entry():
    sim = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.5]])
    assert top1(sim, ["a", "b"], ["a", "a", "b"]).tolist() == [True, False, False]


def test_tar_at_far_by_hand():
    impostor = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3])
    genuine = np.array([0.95, 0.6, 0.45, 0.1])
    # FAR 0.1 of 10 impostors: one may pass, so the threshold is the 2nd highest (0.5).
    tar, thr = tar_at_far(genuine, impostor, 0.1)
    assert thr == 0.5 and tar == 0.5
    tar, thr = tar_at_far(genuine, impostor, 0.0)
    assert thr == 0.9 and tar == 0.25


def _toy():
    # Gallery: a has two photos (a1, a2), b and c one each. Queries are distorted copies.
    gallery = np.stack([unit(1, 0, 0), unit(1, 0.2, 0), unit(0, 1, 0), unit(0, 0, 1)])
    g_labels, g_sources = ["a", "a", "b", "c"], ["a1", "a2", "b1", "c1"]
    queries = np.stack([unit(1, 0.1, 0), unit(0.1, 1, 0), unit(0, 1, 0.2), unit(0, 0.6, 0.5)])
    q_labels, q_kinds, q_sources = ["a", "a", "b", "c"], ["noisy", "sunny", "noisy", "sunny"], ["a1", "a2", "b1", "c1"]
    return gallery, g_labels, g_sources, queries, q_labels, q_kinds, q_sources


def test_retrieval_report_by_hand():
    report = retrieval_report(*_toy())
    # Hits: query 1 (a→a), query 3 (b→b); misses: query 2 (a→b), query 4 (c→b, 0.6 > 0.5).
    assert report["top1"] == pytest.approx(0.5)
    assert report["per_distortion"] == {"noisy": 1.0, "sunny": 0.0}
    assert report["n_queries"] == 4 and report["n_identities"] == 3
    # Predicted [a, b, b, b] vs true [a, a, b, c]: F1 a=2/3, b=1/2, c=0.
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_source_left_out_uses_only_other_photos():
    gallery, g_labels, g_sources, queries, q_labels, _, q_sources = _toy()
    # Query 1 comes from a1: with a1 removed, a's template is a2 alone, still nearest.
    result = source_left_out(gallery, g_labels, g_sources, queries[:1], q_labels[:1], q_sources[:1])
    assert result == {"top1": 1.0, "n_queries": 1}
    by_kind = source_left_out(gallery, g_labels, g_sources, queries[:1], q_labels[:1], q_sources[:1], ["noisy"])
    assert by_kind["per_distortion"] == {"noisy": 1.0}
    # Identities with one clean photo are not scored.
    assert source_left_out(gallery, g_labels, g_sources, queries[2:], q_labels[2:], q_sources[2:])["n_queries"] == 0
    # A query far from a2 but equal to a1 is a hit in the standard figure and a miss here.
    q = unit(0.8, 0, 0.6)[None]
    g2 = np.stack([unit(0.8, 0, 0.6), unit(0, 1, 0), unit(0, 0.3, 1)])
    g3 = np.concatenate([g2, unit(0, 0.9, 0.1)[None]])
    res = source_left_out(g3, ["a", "a", "c", "b"], ["a1", "a2", "c1", "b1"], q, ["a"], ["a1"])
    assert res["top1"] == 0.0
    # Per distortion: that miss as a sunny query, and the same pixels made from a2 as a noisy
    # query, a hit (a1 is then in the gallery and equal to it).
    both = source_left_out(g3, ["a", "a", "c", "b"], ["a1", "a2", "c1", "b1"], np.concatenate([q, q]),
                           ["a", "a"], ["a1", "a2"], ["sunny", "noisy"])
    assert both == {"top1": 0.5, "n_queries": 2, "per_distortion": {"noisy": 1.0, "sunny": 0.0}}


def test_face_left_bins_queries_by_blown_out_share():
    s = lambda who, kind: Sample(who, Path(f"{who}_{kind}.jpg"), kind, who)
    samples = [s("A", "clean"), s("B", "clean"), s("A", "sunny"), s("B", "sunny"), s("A", "noisy"), s("B", "foggy")]
    # A's sunny query looks like B (wrong), B's sunny like B (right), both others right.
    embeddings = np.stack([unit(1, 0), unit(0, 1), unit(0.1, 1), unit(0.2, 1), unit(1, 0.1), unit(0.1, 1)])
    blown = [0.0, 0.0, 0.99, 0.97, 0.0, 0.6]  # clean photos' shares are not queries' and are ignored
    bins = face_left_report(samples, embeddings, blown)
    assert bins == {
        "0-0.5": {"n": 1, "top1": 1.0, "kinds": {"noisy": 1}},
        "0.5-0.95": {"n": 1, "top1": 1.0, "kinds": {"foggy": 1}},
        "0.95-inf": {"n": 2, "top1": 0.5, "kinds": {"sunny": 2}},
    }
