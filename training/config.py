"""Typed training configs: YAML files with defaults that reproduce the shipped model, plus CLI overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.data.dataset import DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    stage: str = "stage1"  # "stage1" (ArcFace) or "stage2" (contrastive)
    data: Path = Path("../shared/data/facecom-train")
    val_split: Path = DEFAULT_VAL_SPLIT  # checkpoints and thresholds are chosen on these people
    test_split: Path = DEFAULT_TEST_SPLIT  # never trained on, never used for a choice
    out_dir: Path = Path("runs/stage1")
    init: str = "casia-webface"  # weights source for the backbone: pretrained name, file or checkpoint
    first_trainable: str = "conv2d_1a"  # layers before this are frozen (and their features cached)
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training photos
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1  # pretrained layers move slower than the new head
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0
    patience: int = 3  # epochs without a better validation score before stopping
    # Wall-clock budget of one launch, in minutes (0: none). After the first epoch the run knows
    # its pace, and lowers `epochs` so that it ends, learning rate annealed, within the budget:
    # the same config runs on a 2-core CPU or a lent GPU without guessing its speed.
    max_minutes: float = 0.0
    # An epoch can be kept as best only if its clean-vs-clean TAR@FAR=1e-3 is at most this far
    # below the starting weights' (about 3 of ~600 genuine pairs on the shipped split).
    max_clean_drop: float = 0.005
    seed: int = 0
    amp: bool = True  # CUDA: fp16 autocast with loss scaling
    # CPU: bf16 autocast. Off by default: measured on this project's 2-core EPYC (AVX-512 BF16),
    # a full forward+backward at batch 32 ran 0.71x as fast in bf16 as in fp32, both
    # channels_last (benchmarks/train_step.py).
    cpu_bf16: bool = False
    channels_last: bool = True  # fp32 on that CPU: 1.16x as fast as without (benchmarks/train_step.py)
    augment: bool = True  # only where the trunk is trained (features are not cached)
    synthetic_share: float = 0.5  # share of clean training crops distorted afresh each time they are drawn
    # The kinds those are drawn from, comma-separated (a kind listed twice is drawn twice as
    # often); empty: the seven equally.
    synthetic_kinds: str = ""
    # Stage 1: ArcFace
    arc_s: float = 32.0
    arc_m: float = 0.4
    # Stage 1: weight of the pull toward the starting weights' embedding of each crop's clean
    # source photo (training/distillation.py); 0: off
    distill_weight: float = 0.0
    # Stage 2: contrastive
    margin: float = 1.0
    cache_dir: Path = Path(".cache")
    device: str = "auto"

    @property
    def distortion_kinds(self) -> tuple[str, ...]:
        """`synthetic_kinds` as the tuple SyntheticDistortions draws from."""
        from training.distortions import KINDS  # cv2 and albumentations: only where training runs

        return tuple(k.strip() for k in self.synthetic_kinds.split(",") if k.strip()) or KINDS

    def resolved_device(self) -> str:
        from core.device import resolve_device

        return resolve_device(self.device)


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"expected a boolean, got {value!r}")
        return value.lower() in {"true", "1", "yes"}
    if isinstance(current, Path):
        return Path(value)
    return type(current)(value)


def load_config(path: Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (unknown keys are an error) and apply `key=value` overrides."""
    config = TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read config ({exc})") from exc
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        values[key] = value
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(names))}")
        setattr(config, key, _coerce(str(value), getattr(config, key)))
    if config.synthetic_kinds:  # before minutes of detection, not after
        from training.distortions import check_kinds

        check_kinds(config.distortion_kinds)
    return config


def as_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
