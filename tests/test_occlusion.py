"""The occlusion analysis on crops whose answer is known by construction."""

import numpy as np
import torch

from evaluation.occlusion import HAIR_ROWS, occlusion_report, paint, region_masks


def test_paint_whitens_only_the_mask():
    crops = torch.zeros(2, 3, 160, 160, dtype=torch.uint8)
    mask = region_masks()["hair (top 30%)"]
    out = paint(crops, mask)
    assert out[:, :, :HAIR_ROWS].eq(255).all() and out[:, :, HAIR_ROWS:].eq(0).all()
    assert crops.eq(0).all()  # the input is left as it was


def test_report_counts_the_right_answers_a_region_carries():
    # Each person's "hair" (top rows) holds their number; the answer reads it back, so painting
    # the hair white loses every right answer and painting the chin loses none.
    crops = torch.zeros(4, 3, 160, 160, dtype=torch.uint8)
    for i, value in enumerate([10, 20, 30, 20]):
        crops[i, :, :HAIR_ROWS] = value
    names = {10: "A", 20: "B", 30: "C"}
    answer = lambda x: np.array([names.get(int(c[0, 0, 0]), "nobody") for c in x])
    report = occlusion_report(crops, ["A", "B", "C", "A"], answer)  # the last one is answered B: wrong
    assert report["n"] == 4 and report["top1"] == 0.75
    painted = report["painted"]
    assert painted["hair (top 30%)"] == {"top1": 0.0, "right_answers_kept": 0.0}
    assert painted["chin and collar (bottom 30%)"] == {"top1": 0.75, "right_answers_kept": 1.0}
    assert painted["outline (outer 24 px)"]["right_answers_kept"] == 0.0  # the ring covers the top-left pixel
    assert painted["centre"]["right_answers_kept"] == 1.0
