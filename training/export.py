"""Export a trained backbone (fp16) with a model card that the loader and the service read."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from models.backbone import BACKBONE_FILE, MODEL_CARD
from models.weights import sha256_of
from training.checkpoint import load_checkpoint


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def export(ckpt: Path, out: Path, half: bool = True, extra: dict | None = None) -> Path:
    state = load_checkpoint(ckpt)
    backbone = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["backbone"].items()}
    out.mkdir(parents=True, exist_ok=True)
    weights = out / BACKBONE_FILE
    tmp = weights.with_suffix(".tmp")
    torch.save(backbone, tmp)
    tmp.replace(weights)
    report = state.get("val_report", {})
    card = {
        "name": out.name,
        "architecture": "facenet-pytorch InceptionResnetV1, 512-d, L2-normalised",
        "weights_file": BACKBONE_FILE,
        "dtype": "float16" if half else "float32",
        "sha256": sha256_of(weights),
        "checkpoint": str(ckpt),
        "epoch": state.get("epoch", -1) + 1,
        "config": state.get("config"),
        "n_training_identities": len(state.get("label_map", [])),
        "validation": {k: report.get(k) for k in ("top1", "per_distortion", "source_left_out", "verification", "clean_verification", "n_queries", "n_identities")},
        # The whole run, not just the epochs up to the one kept (history.json sits beside best.pt).
        "history": json.loads(run_history.read_text()) if (run_history := Path(ckpt).parent / "history.json").is_file() else state.get("history"),
        "git_commit": _git_commit(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2))
    return out
