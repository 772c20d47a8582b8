"""Test-time restoration: impulse-noisy crops are median-filtered before embedding, others untouched."""

import numpy as np
import torch

from core.embedding.restoration import NOISE_TO_RESTORE, restore
from core.pixels import impulse_noise
from tests.conftest import PORTRAIT


def face_crop() -> torch.Tensor:
    from PIL import Image

    img = Image.open(PORTRAIT).convert("RGB").resize((160, 160))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def salt_and_pepper(crop: torch.Tensor, share: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = crop.clone().numpy()
    hit = rng.random(out.shape[1:]) < share
    out[:, hit] = np.where(rng.random(hit.sum()) < 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def test_noisy_crops_are_filtered_and_clean_ones_left_alone():
    clean = face_crop()
    noisy = salt_and_pepper(clean, 0.1)
    assert impulse_noise(clean.permute(1, 2, 0).numpy()) < NOISE_TO_RESTORE <= impulse_noise(noisy.permute(1, 2, 0).numpy())
    batch = torch.stack([clean, noisy])
    out = restore(batch)
    assert torch.equal(out[0], clean)  # untouched, bit for bit
    before = (noisy.float() - clean.float()).abs().mean()
    after = (out[1].float() - clean.float()).abs().mean()
    assert after < before / 3  # the filter takes most of the noise back out
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert torch.equal(batch[1], noisy)  # the caller's tensor is not changed


def test_a_batch_with_nothing_to_restore_is_returned_as_is():
    batch = torch.stack([face_crop(), face_crop()])
    assert restore(batch) is batch


def test_the_embedder_restores_before_embedding():
    from core.embedding.embedder import Embedder
    from core.models.backbone import build_backbone

    clean = face_crop()
    noisy = salt_and_pepper(clean, 0.1)
    embedder = Embedder(build_backbone().eval())
    restored = restore(noisy[None])
    assert np.allclose(embedder.embed(noisy[None]), embedder.embed(restored), atol=1e-5)
