"""Loss functions against hand-computed values."""

import math

import pytest
import torch

from core.data.dataset import Sample
from training.arcface import ArcMarginHead
from training.contrastive import ContrastiveLoss, hardest_negatives
from training.distillation import clean_sources, distillation_loss


def _head_with_weights(weights, s=10.0, m=0.5):
    head = ArcMarginHead(2, len(weights), s=s, m=m)
    head.weight.data = torch.tensor(weights, dtype=torch.float32)
    return head


def test_arcface_target_logit_is_s_cos_theta_plus_m():
    theta = 0.6
    head = _head_with_weights([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[math.cos(theta), math.sin(theta)]])
    logits = head(x, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(theta + 0.5), abs=1e-5)
    # The other class keeps s·cos θ: the angle to (0, 1) is π/2 − θ.
    assert logits[0, 1].item() == pytest.approx(10 * math.cos(math.pi / 2 - theta), abs=1e-5)


def test_arcface_is_scale_invariant_in_features_and_weights():
    head = _head_with_weights([[2.0, 0.0], [0.0, 3.0]])
    x = torch.tensor([[0.3, 0.4]])
    assert torch.allclose(head(x, torch.tensor([1])), head(x * 7, torch.tensor([1])))


@pytest.mark.parametrize("theta", [0.0, math.pi])
def test_arcface_gradient_is_finite_at_the_ends(theta):
    head = _head_with_weights([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[math.cos(theta), math.sin(theta)]], requires_grad=True)
    loss = torch.nn.functional.cross_entropy(head(x, torch.tensor([0])), torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_arcface_target_logit_keeps_falling_past_pi_minus_m():
    head = _head_with_weights([[1.0, 0.0], [0.0, 1.0]], m=0.5)
    thetas = [math.pi - 0.7, math.pi - 0.5, math.pi - 0.3, math.pi - 0.01]
    logits = [head(torch.tensor([[math.cos(t), math.sin(t)]]), torch.tensor([0]))[0, 0].item() for t in thetas]
    assert all(a > b for a, b in zip(logits, logits[1:]))


def test_contrastive_loss_on_known_distances():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # distances 0.8944 and 0
    n = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # distances √2 (beyond margin) and 0.5 inside
    n[1] = torch.tensor([0.0, 0.5])  # distance 0.5 from (0, 1)
    loss = ContrastiveLoss(margin=1.0)(a, p, n)
    d_pos_sq = (0.4**2 + 0.8**2, 0.0)
    expected = 0.5 * sum(d_pos_sq) / 2 + 0.5 * (0.0 + (1.0 - 0.5) ** 2) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_hardest_negative_is_nearest_other_person():
    anchors = torch.tensor([[1.0, 0.0]])
    cands = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels_c = torch.tensor([0, 1, 2])
    assert torch.equal(hardest_negatives(anchors, cands, torch.tensor([0]), labels_c)[0], cands[1])


def test_distillation_loss_is_one_minus_cosine_over_rows_with_a_target():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    t = torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]])  # the last row has no target
    assert distillation_loss(e, t).item() == pytest.approx(((1 - 0.6) + 0.0) / 2, abs=1e-6)
    assert distillation_loss(e, torch.zeros_like(e)).item() == 0.0


def test_each_sample_is_distilled_toward_its_own_clean_source_photo(tmp_path):
    def sample(identity, name, kind, source):
        return Sample(identity, tmp_path / identity / name, kind, source)

    samples = [sample("a", "a1.jpg", "clean", "a1"), sample("a", "a2.jpg", "clean", "a2"),
               sample("a", "a2_foggy.jpg", "foggy", "a2"), sample("b", "a2_noisy.jpg", "noisy", "a2"),
               sample("a", "x_rainy.jpg", "rainy", None)]
    # b's copy names a2 as its source, but a2 is a's photo: no target, as for an unknown source
    assert clean_sources(samples).tolist() == [0, 1, 1, -1, -1]
