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
    """The threshold that holds strangers to the target rate in a report, the rule in words for
    the card, and the report itself. Two kinds of report say it: `faceid evaluate` on validation
    people (strangers' distorted photos, FACECOM-like) and the real-photo evaluation
    (evaluation/real_photos.py: other photos of people never enrolled, chosen on its choose people)."""
    try:
        report = json.loads(Path(report_path).read_text())
        if "threshold_for_strangers" in report:
            chosen = report["threshold_for_strangers"]
            threshold, rate, what = float(chosen["threshold"]), chosen["rate"], "strangers' real photos (the choose people of evaluation/real_photos.py)"
        else:
            open_set = report["open_set"]
            threshold, rate, what = float(open_set["threshold_for_target"]), open_set["target_stranger_rate"], "strangers' distorted photos (open set)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report_path}: neither a faceid evaluate report with open-set figures nor a real-photo report ({exc})") from exc
    rule = f"names at most {rate:.0%} of {what} at the rate's {CONFIDENCE:.0%} upper confidence bound, chosen in {Path(report_path).name}"
    return threshold, rule, report


def strictest_threshold(report_paths: Sequence[Path]) -> tuple[float, str, dict | None]:
    """The highest of the reports' thresholds, so that every rule holds; the rules in words; and
    the `faceid evaluate` report among them (a soup's validation figures), if any."""
    chosen = [open_set_threshold(p) for p in report_paths]
    threshold = max(t for t, _, _ in chosen)
    rules = "; ".join(f"{rule} ({t:.3f})" for t, rule, _ in chosen)
    rule = rules if len(chosen) == 1 else f"the highest of: {rules}"
    evaluated = next((r for _, _, r in chosen if "open_set" in r), None)
    return threshold, rule, evaluated


def pair_threshold(report_path: Path) -> tuple[float, str]:
    """/verify's threshold from a real-photo report (evaluation/real_photos.py): the one chosen at
    its FAR on the choose people, and the rule in words with what it gave on the report people."""
    try:
        report = json.loads(Path(report_path).read_text())
        chosen, reported = report["verification_1to1"]["choose"], report["verification_1to1"]["report"]
        threshold = float(chosen["threshold"])
        rule = (f"FAR {chosen['far_target']:g} over every pair of two people's real photos of the choose people of "
                f"evaluation/real_photos.py (never trained on; each person's first photos; {chosen['impostor_pairs']} impostor pairs), "
                f"TAR {chosen['tar']:.3f} there; on the report people TAR {reported['tar']:.3f} at FAR {reported['far']:.4f}, "
                f"chosen in {Path(report_path).name}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report_path}: not a real-photo report with 1:1 verification figures ({exc})") from exc
    return threshold, rule


def export(ckpt: Path | Sequence[Path], out: Path, half: bool = True, threshold_report: Path | Sequence[Path] | None = None,
           command: str | None = None, verify_report: Path | None = None) -> Path:
    """`ckpt`: one checkpoint, or several runs from one start whose backbones are averaged
    (training/soup.py). `threshold_report`: reports whose strangers' thresholds (the highest of
    them) become the service's default (`open_set_threshold`); for a soup, or a run that validated
    nothing itself (a head refit), the `faceid evaluate` report's figures become the card's
    validation. Without it, the FAR-1e-3 threshold of training's validation. `verify_report`: a
    real-photo report whose 1:1 threshold becomes /verify's default."""
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
        reports = [Path(threshold_report)] if isinstance(threshold_report, (str, Path)) else [Path(r) for r in threshold_report]
        threshold, rule, evaluated = strictest_threshold(reports)
        if (not single or not report) and evaluated is not None:
            report = evaluated
    verify, verify_rule = pair_threshold(verify_report) if verify_report is not None else (None, None)
    run = states[0] if single else {}
    card = ModelCard(
        name=out.name,
        sha256=sha256_of(weights),
        threshold=threshold,
        threshold_rule=rule,
        verify_threshold=verify,
        verify_rule=verify_rule,
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
