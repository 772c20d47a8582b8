"""Evaluate a backbone on a data set by gallery retrieval: the work behind `faceid evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.data.dataset import LayoutError, Sample, read_split, scan
from core.device import resolve_device
from core.embedding.runtime import make_embedder
from core.faces.pipeline import DATASET_PIPELINE, FacePipeline, load_pipeline
from core.faces.quality import assess
from core.models.backbone import Backbone, load_backbone
from core.models.thresholds import model_threshold
from core.photos.descriptor import PHOTO_THRESHOLD
from evaluation import photos
from evaluation.clean_guard import clean_guard
from evaluation.embeddings import embed_samples, embedder_id
from evaluation.metrics import clean_verification
from evaluation.report import report_from_embeddings


@dataclass(frozen=True)
class EvaluationRun:
    data: Path
    split: Path | None = None  # evaluate only these identities
    # Other people whose clean photos join the gallery, never queried: a gallery nearer a deployment's
    # size (retrieval, open-set and photo figures fall as it grows). Clean verification stays the evaluated people's.
    distractors: Path | None = None
    weights: str | None = None  # default: the service's backbone
    cache_dir: Path = Path(".cache")
    use_fallback: bool = True
    retry_enhanced: bool = True
    device: str = "auto"
    plots: Path | None = None
    threshold: float | None = None  # for the open-set figures; default: the service's for this model
    runtime: str = "auto"  # the embedder's, as FACEID_RUNTIME picks it for the service
    photo_threshold: float | None = PHOTO_THRESHOLD  # photo evidence (evaluation/photos.py); None: face evidence alone
    # The clean-verification guard's baseline (evaluation/clean_guard.py): the pretrained backbone
    # the shipped model was fine-tuned from. None: no guard.
    baseline: str | None = "casia-webface"


def evaluate(run: EvaluationRun) -> dict:
    """The report (see `report_from_embeddings`) plus what produced it; plots if asked."""
    samples = scan(run.data, read_split(run.split) if run.split else None)
    evaluated = len(samples)  # the distractors' clean photos follow them
    if run.distractors is not None:
        samples += distractor_photos(run.data, read_split(run.distractors), {s.identity for s in samples})
    device = resolve_device(run.device)
    backbone = load_backbone(run.weights, device)
    baseline = load_backbone(run.baseline, device) if run.baseline is not None else None  # a bad one fails before the work
    config = replace(DATASET_PIPELINE, use_fallback=run.use_fallback, retry_enhanced=run.retry_enhanced)
    pipeline = load_pipeline(config, device)
    embedder = make_embedder(backbone, device, runtime=run.runtime)  # as the service embeds: ONNX Runtime on the CPU
    embeddings, faces, crops = embed_samples(samples, pipeline, embedder, embedder_id(backbone.model_id, embedder.runtime), run.cache_dir)
    threshold = run.threshold if run.threshold is not None else model_threshold(backbone.source)
    qualities = [assess(c.permute(1, 2, 0).numpy(), f.box, f.score) for c, f in zip(crops, faces)]
    gone = [bool(q.gone) for q in qualities]  # never named by face evidence, as in the service
    report = report_from_embeddings(samples, embeddings, faces, threshold, [bool(q.reasons) for q in qualities],
                                    [q.measures["over_exposed"] for q in qualities], gone)
    if run.photo_threshold is not None:
        thumbs, sizes = photos.thumbnails(samples)
        report["photo_evidence"] = photos.report(samples, embeddings, faces, sizes, thumbs, threshold, run.photo_threshold, gone)
    if run.distractors is not None:
        # Scored above over the whole gallery's clean pairs; verification stays the evaluated people's.
        own_clean = [i for i, s in enumerate(samples[:evaluated]) if s.is_clean]
        report["clean_verification"] = clean_verification(embeddings[own_clean], [samples[i].identity for i in own_clean])
        report["distractors"] = {"split": run.distractors.name, "people": len({s.identity for s in samples[evaluated:]}),
                                 "photos": len(samples) - evaluated}
    if baseline is not None:
        report["clean_guard"] = _clean_guard(run, samples[:evaluated], embeddings[:evaluated], backbone, baseline, pipeline, device)
    report["weights"] = backbone.source
    report["model_id"] = backbone.model_id
    report["runtime"] = embedder.runtime
    report["pipeline"] = {"use_fallback": config.use_fallback, "retry_enhanced": config.retry_enhanced,
                          "box_regressor": pipeline.regressor.sha256 if pipeline.regressor is not None else None}
    if run.plots:
        from evaluation.plots import write_all

        write_all(report, embeddings, [s.identity for s in samples], [s.is_clean for s in samples], run.plots)
    return report


def distractor_photos(data: Path, people: set[str], evaluated: set[str]) -> list[Sample]:
    """The clean photos of `people`, to enlarge the gallery; none of them may be an evaluated person."""
    if both := sorted(people & evaluated):
        raise LayoutError(f"distractors are people not evaluated, but {len(both)} are both, e.g. {both[:3]}")
    return [s for s in scan(data, people) if s.is_clean]


def _clean_guard(run: EvaluationRun, samples: Sequence[Sample], embeddings: np.ndarray, backbone: Backbone, base: Backbone,
                 pipeline: FacePipeline, device: str) -> dict:
    """Clean TAR at FAR 1e-3 with its interval over people, and its difference to the baseline's
    on the same clean photos, embedded by the same pipeline and runtime."""
    clean = [i for i, s in enumerate(samples) if s.is_clean]
    if base.sha256 == backbone.sha256:
        baseline = embeddings[clean]
    else:
        embedder = make_embedder(base, device, runtime=run.runtime)
        baseline, _, _ = embed_samples([samples[i] for i in clean], pipeline, embedder, embedder_id(base.model_id, embedder.runtime),
                                       run.cache_dir, progress=False)
    guard = clean_guard(embeddings[clean], [samples[i].identity for i in clean], baseline=baseline)
    return {"baseline": base.model_id, **guard}
