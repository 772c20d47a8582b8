"""Export a trained backbone (fp16 by default) with the model card the loader and the service read."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

from core.files import atomic_write, sha256_of
from core.models.model_card import BACKBONE_FILE, DEFAULT_FAR, ModelCard
from evaluation.metrics import threshold_at
from evaluation.open_set import CONFIDENCE
from training.checkpoint import load_checkpoint

REPORT_KEYS = ("top1", "per_distortion", "source_left_out", "verification", "clean_verification", "n_queries", "n_identities")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def open_set_threshold(report_path: Path) -> tuple[float, str]:
    """The threshold that holds strangers to the target rate in an evaluation report (run it on
    the validation people), and the rule in words for the card."""
    try:
        open_set = json.loads(Path(report_path).read_text())["open_set"]
        threshold = float(open_set["threshold_for_target"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report_path}: not a faceid evaluate report with open-set figures ({exc})") from exc
    rule = (f"names at most {open_set['target_stranger_rate']:.0%} of strangers' distorted photos (open set) at the rate's {CONFIDENCE:.0%} "
            f"upper confidence bound, chosen in {Path(report_path).name}")
    return threshold, rule


def export(ckpt: Path, out: Path, half: bool = True, threshold_report: Path | None = None, command: str | None = None) -> Path:
    """`threshold_report`: a `faceid evaluate` report on validation people whose open-set
    threshold becomes the service's default; without it, the FAR-1e-3 threshold of training's
    validation."""
    state = load_checkpoint(ckpt)
    backbone = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["backbone"].items()}
    out.mkdir(parents=True, exist_ok=True)
    weights = out / BACKBONE_FILE
    with atomic_write(weights) as tmp:
        torch.save(backbone, tmp)
    report = state.get("val_report", {})
    # The whole run, not just the epochs up to the one kept (history.json sits beside best.pt).
    run_history = Path(ckpt).parent / "history.json"
    threshold = threshold_at(report["verification"], DEFAULT_FAR) if "verification" in report else None
    rule = None
    if threshold_report is not None:
        threshold, rule = open_set_threshold(threshold_report)
    card = ModelCard(
        name=out.name,
        sha256=sha256_of(weights),
        threshold=threshold,
        threshold_rule=rule,
        weights_file=BACKBONE_FILE,
        dtype="float16" if half else "float32",
        checkpoint=str(ckpt),
        epoch=state.get("epoch", -1) + 1,
        n_training_identities=len(state.get("label_map", [])),
        config=state.get("config"),
        validation={k: report.get(k) for k in REPORT_KEYS},
        history=json.loads(run_history.read_text()) if run_history.is_file() else state.get("history", []),
        git_commit=_git_commit(),
        command=command,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card.write(out)
    return out
