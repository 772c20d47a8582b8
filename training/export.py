"""Export a trained backbone, or a soup of several (fp16 by default), with the model card the loader and the service read."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from core.files import save_tensors_atomic, sha256_of
from core.models.model_card import BACKBONE_FILE, DEFAULT_FAR, ModelCard
from evaluation.metrics import threshold_at
from evaluation.open_set import CONFIDENCE
from training.checkpoint import load_checkpoint
from training.soup import average_backbones, check_ingredients

REPORT_KEYS = ("top1", "per_distortion", "source_left_out", "verification", "clean_verification", "n_queries", "n_identities")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def open_set_threshold(report_path: Path) -> tuple[float, str, dict]:
    """The threshold that holds strangers to the target rate in an evaluation report (run it on
    the validation people), the rule in words for the card, and the report itself."""
    try:
        report = json.loads(Path(report_path).read_text())
        open_set = report["open_set"]
        threshold = float(open_set["threshold_for_target"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report_path}: not a faceid evaluate report with open-set figures ({exc})") from exc
    rule = (f"names at most {open_set['target_stranger_rate']:.0%} of strangers' distorted photos (open set) at the rate's {CONFIDENCE:.0%} "
            f"upper confidence bound, chosen in {Path(report_path).name}")
    return threshold, rule, report


def export(ckpt: Path | Sequence[Path], out: Path, half: bool = True, threshold_report: Path | None = None,
           command: str | None = None) -> Path:
    """`ckpt`: one checkpoint, or several runs from one start whose backbones are averaged
    (training/soup.py). `threshold_report`: a `faceid evaluate` report on validation people whose
    open-set threshold becomes the service's default (for a soup, its figures become the card's
    validation); without it, the FAR-1e-3 threshold of training's validation."""
    ckpts = [Path(ckpt)] if isinstance(ckpt, (str, Path)) else [Path(c) for c in ckpt]
    states = [load_checkpoint(c) for c in ckpts]
    check_ingredients(ckpts, states)
    single = len(states) == 1
    backbone = states[0]["backbone"] if single else average_backbones([s["backbone"] for s in states])
    backbone = {k: (v.half() if half and v.is_floating_point() else v) for k, v in backbone.items()}
    out.mkdir(parents=True, exist_ok=True)
    weights = out / BACKBONE_FILE
    save_tensors_atomic(backbone, weights)
    # A soup's runs were validated as themselves, not as the soup: its figures come from the report.
    report = states[0].get("val_report", {}) if single else {}
    threshold = threshold_at(report["verification"], DEFAULT_FAR) if "verification" in report else None
    rule = None
    if threshold_report is not None:
        threshold, rule, evaluated = open_set_threshold(threshold_report)
        if not single:
            report = evaluated
    run = states[0] if single else {}
    card = ModelCard(
        name=out.name,
        sha256=sha256_of(weights),
        threshold=threshold,
        threshold_rule=rule,
        weights_file=BACKBONE_FILE,
        dtype="float16" if half else "float32",
        checkpoint=str(ckpts[0]) if single else None,
        epoch=run.get("epoch", -1) + 1 if single else None,
        n_training_identities=len(states[0].get("label_map", [])),
        config=run.get("config"),
        soup=None if single else [{"checkpoint": str(c), "epoch": s.get("epoch", -1) + 1, "config": s.get("config")}
                                  for c, s in zip(ckpts, states)],
        validation={k: report.get(k) for k in REPORT_KEYS},
        history=_history(ckpts[0], run) if single else [],
        git_commit=_git_commit(),
        command=command,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card.write(out)
    return out


def _history(ckpt: Path, state: dict) -> list:
    """The whole run, not just the epochs up to the one kept (history.json sits beside best.pt)."""
    run_history = ckpt.parent / "history.json"
    return json.loads(run_history.read_text()) if run_history.is_file() else state.get("history", [])
