"""Training data: identity split, the one label mapping, face crops, and cached trunk features."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1
from tqdm import tqdm

from core.data.crop_cache import face_crops
from core.data.dataset import Sample, read_split, scan
from core.embedding.restoration import NOISE_TO_RESTORE
from core.embedding.standardize import network_input
from core.faces.pipeline import DATASET_PIPELINE, load_pipeline
from training.split_backbone import frozen_stages, trunk


@dataclass(frozen=True)
class LabelMap:
    """Training identity → class index; built once, saved in every checkpoint, reused everywhere."""

    identities: tuple[str, ...]

    @classmethod
    def from_samples(cls, samples: list[Sample]) -> LabelMap:
        return cls(tuple(sorted({s.identity for s in samples})))

    def __len__(self) -> int:
        return len(self.identities)

    def labels(self, samples: list[Sample]) -> torch.Tensor:
        index = {name: i for i, name in enumerate(self.identities)}
        unknown = {s.identity for s in samples} - index.keys()
        if unknown:
            raise ValueError(f"identities outside the label map, e.g. {sorted(unknown)[:3]}")
        return torch.tensor([index[s.identity] for s in samples])


def split_samples(data: Path, val_split: Path, test_split: Path | None = None) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) samples. Validation identities choose checkpoints; test identities
    (if a split is given) are neither trained on nor looked at, so final figures stay honest."""
    val_ids = read_split(val_split)
    test_ids = read_split(test_split) if test_split is not None else set()
    if overlap := val_ids & test_ids:
        raise ValueError(f"{val_split} and {test_split} share identities, e.g. {sorted(overlap)[:3]}")
    samples = scan(data)
    held_out = val_ids | test_ids
    train = [s for s in samples if s.identity not in held_out]
    val = [s for s in samples if s.identity in val_ids]
    if not val:
        raise ValueError(f"{val_split}: none of its identities are in {data}")
    return train, val


def load_crops(samples: list[Sample], cache_dir: Path, device: str = "cpu") -> torch.Tensor:
    """uint8 crops from the shared pipeline (detections cached on disk)."""
    crops, _ = face_crops([s.path for s in samples], load_pipeline(DATASET_PIPELINE, device), cache_dir)
    return crops


def _trunk_key(net: InceptionResnetV1, first_trainable: str, crops: torch.Tensor) -> str:
    digest = hashlib.sha1(f"{first_trainable}|restore>={NOISE_TO_RESTORE}".encode())
    frozen = set(frozen_stages(first_trainable))
    for name, tensor in net.state_dict().items():
        if name.split(".")[0] in frozen:
            digest.update(tensor.cpu().numpy().tobytes())
    digest.update(crops[:: max(1, len(crops) // 64)].numpy().tobytes())
    digest.update(str(tuple(crops.shape)).encode())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def trunk_features(
    net: InceptionResnetV1, crops: torch.Tensor, first_trainable: str, cache_dir: Path, device: str, batch_size: int = 64
) -> torch.Tensor:
    """The frozen trunk's output for every crop, fp16, cached on disk by trunk weights and inputs."""
    path = Path(cache_dir) / "trunk" / f"{_trunk_key(net, first_trainable, crops)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    net.eval()
    out = []
    for start in tqdm(range(0, len(crops), batch_size), desc=f"trunk→{first_trainable}"):
        x = network_input(crops[start : start + batch_size], device)
        out.append(trunk(net, x, first_trainable).half().cpu())
    features = torch.cat(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, path)
    return features
