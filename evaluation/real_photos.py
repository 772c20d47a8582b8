"""Real photos, new photos: how the face channel does when the query is a *different* photo of
an enrolled person, as users bring, rather than a distorted copy of the enrolled one (FACECOM).

On a folder per person (LFW's layout: `<Person>/<Person>_NNNN.jpg`), with the service's own
detection (no fallback box: a photo where no face is found is a miss, as the service answers)
and the service's embedder:
- **1:1 verification** (`/verify`): every pair of two photos of one person against every pair of
  two people; the threshold at a false-accept rate, and the true accepts there.
- **LFW's protocol**: the standard pairs among these people, in ten folds, each scored at the
  threshold the nine others choose (pairs without a detected face keep the whole-image crop,
  since the protocol scores every pair).
- **Identification with one photo enrolled per person** (`/identify`): the first photo of each
  person with two or more enrolled, the others as queries; the people with one photo are the
  strangers, never enrolled. Top-1, and what the service answers at its threshold: named
  correctly, strangers named (a face gone to glare or darkness is never named, as there).

People are carved by name into train, choose and report sets (`core/data/people.py`): thresholds are chosen
on `choose`, figures reported on `report`, and nobody trained on is in either.

    python -m evaluation.real_photos --data DIR/lfw --pairs DIR/pairs-dev.txt [--weights W] [--report reports/real-photos.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.clusters import LINKAGE, MAX_DISTANCE, Linkage, cluster, purity_and_completeness
from core.data.dataset import DEFAULT_TRAIN_PEOPLE, Sample, read_split
from core.data.people import carve, folder_people
from core.embedding.embedder import Embedder
from core.embedding.templates import templates
from core.faces.pipeline import DetectedFace, FacePipeline
from core.files import atomic_write
from evaluation.metrics import tar_at_far
from evaluation.open_set import CONFIDENCE, TARGET_STRANGER_RATE, UNDETECTED_PATHS, rate_upper_bound, threshold_for_stranger_rate
from evaluation.photo_distortions import KINDS, distort, seed_of

FAR = 1e-3
# 1:1 pairs: each person's first photos only, so that a few people with hundreds of photos (LFW
# has some) do not make most of the pairs.
PAIR_PHOTOS_PER_PERSON = 10


@dataclass(frozen=True)
class Embedded:
    """Photos as the service sees them: each one's person, embedding, whether a face was found,
    and whether that face is gone (blown out or black: never named by its looks)."""

    people: list[str]
    paths: list[Path]
    vectors: np.ndarray
    found: np.ndarray
    gone: np.ndarray


def verification_1to1(data: Embedded, far: float = FAR, threshold: float | None = None, per_person: int = PAIR_PHOTOS_PER_PERSON) -> dict:
    """Every same-person pair against every two-person pair, among each person's first
    `per_person` photos with a face found and not gone (the others are refused or unverified by
    the service). With `threshold`, the rates there; without, the threshold at `far` and the true
    accepts at it."""
    seen: dict[str, int] = {}
    first = np.zeros(len(data.people), dtype=bool)
    for i, person in enumerate(data.people):
        if data.found[i] and not data.gone[i] and seen.get(person, 0) < per_person:
            seen[person] = seen.get(person, 0) + 1
            first[i] = True
    keep = first
    x, labels = data.vectors[keep], np.asarray(data.people)[keep]
    sims = x @ x.T
    upper = np.triu_indices(len(x), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    genuine, impostor = sims[upper][same], sims[upper][~same]
    out = {"photos": int(keep.sum()), "refused_photos": int((~(data.found & ~data.gone)).sum()), "genuine_pairs": int(len(genuine)),
           "impostor_pairs": int(len(impostor)), "people": len(set(labels.tolist()))}
    if threshold is None:
        tar, threshold = tar_at_far(genuine, impostor, far)
        return out | {"far_target": far, "threshold": threshold, "tar": tar}
    accepted = int((impostor >= threshold).sum())
    return out | {"threshold": threshold, "tar": float((genuine >= threshold).mean()), "far": accepted / max(1, len(impostor)),
                  "far_ucb95": rate_upper_bound(accepted, len(impostor))}


def clustering(data: Embedded, max_distance: float = MAX_DISTANCE, method: Linkage = LINKAGE,
               per_person: int = PAIR_PHOTOS_PER_PERSON) -> dict:
    """The unknown-faces log's clustering (core/clusters.py) on these photos as if nobody were
    enrolled: each person's first `per_person` photos with a face found and not gone."""
    seen: dict[str, int] = {}
    keep = np.zeros(len(data.people), dtype=bool)
    for i, person in enumerate(data.people):
        if data.found[i] and not data.gone[i] and seen.get(person, 0) < per_person:
            seen[person] = seen.get(person, 0) + 1
            keep[i] = True
    labels = cluster(data.vectors[keep], max_distance, method)
    return {"method": method, "max_distance": max_distance, "faces": int(keep.sum())} | purity_and_completeness(labels, np.asarray(data.people)[keep])


def choose_clustering(data: Embedded, min_pure: float = 0.95) -> dict:
    """The linkage and cut that put most of a person's faces together while at least `min_pure`
    of the faces are in clusters of one person (on the choose people)."""
    grid = [clustering(data, d / 100, m) for m in ("single", "average", "complete") for d in range(20, 85, 5)]
    ok = [g for g in grid if g["faces_in_pure_clusters"] >= min_pure] or grid
    return {"chosen": max(ok, key=lambda g: g["largest_cluster_share"]), "grid": grid, "min_pure": min_pure}


def read_pairs(path: Path) -> list[tuple[str, int, str, int]]:
    """LFW's pairs: (person, photo number, person, photo number); same person when the names match."""
    out = []
    for line in Path(path).read_text().splitlines():
        f = line.split("\t")
        if len(f) == 3:
            out.append((f[0], int(f[1]), f[0], int(f[2])))
        elif len(f) == 4:
            out.append((f[0], int(f[1]), f[2], int(f[3])))
    return out


def lfw_protocol(pairs: Sequence[tuple[str, int, str, int]], vector_of: dict[tuple[str, int], np.ndarray], folds: int = 10) -> dict:
    """Accuracy on the pairs in `folds` contiguous folds (the standard file's order keeps its
    sets together), each at the threshold that is best on the other folds."""
    usable = [p for p in pairs if (p[0], p[1]) in vector_of and (p[2], p[3]) in vector_of]
    sims = np.array([float(vector_of[(a, i)] @ vector_of[(b, j)]) for a, i, b, j in usable])
    same = np.array([a == b for a, _, b, _ in usable])
    parts = np.array_split(np.arange(len(usable)), folds)
    accuracies, thresholds = [], []
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        candidates = np.unique(sims[train])
        correct = [np.mean((sims[train] >= t) == same[train]) for t in candidates]
        best = float(candidates[int(np.argmax(correct))])
        thresholds.append(best)
        accuracies.append(float(np.mean((sims[test] >= best) == same[test])))
    return {"pairs": len(usable), "same_pairs": int(same.sum()), "folds": folds, "accuracy": float(np.mean(accuracies)),
            "accuracy_std": float(np.std(accuracies)), "threshold_mean": float(np.mean(thresholds))}


def stranger_threshold(data: Embedded, rate: float = TARGET_STRANGER_RATE) -> float:
    """The lowest identification threshold that names at most `rate` of the strangers (one photo
    enrolled per person, as `one_photo_enrolled`) at the rate's 95% upper bound."""
    people = np.asarray(data.people)
    counts = {p: int((people == p).sum()) for p in set(data.people)}
    first: dict[str, int] = {}
    for i, p in enumerate(data.people):
        first.setdefault(p, i)
    gallery = [first[p] for p, n in counts.items() if n > 1]
    strangers = [i for i, p in enumerate(data.people) if counts[p] == 1 and data.found[i] and not data.gone[i]]
    top = (data.vectors[strangers] @ data.vectors[gallery].T).max(axis=1)
    return threshold_for_stranger_rate(top, rate, confidence=CONFIDENCE)


def one_photo_enrolled(data: Embedded, threshold: float, enrolled_photos: int = 1, queries_from: int | None = None,
                       queries: Embedded | None = None) -> dict:
    """Each person with more than `enrolled_photos` photos (more than `queries_from`, when given)
    is enrolled with their first ones, the rest (from photo `queries_from` on, when given: the
    same queries for one or two enrolled photos) are queries; people with exactly one photo are
    strangers. A query is named by the person whose template (core/embedding/templates.py: with
    one photo enrolled, that photo) is most similar, when that similarity reaches `threshold`,
    its face was found and is not gone. With `queries` (the same photos, in the same order,
    distorted), the queries and strangers are those; the enrolled photos stay `data`'s. TAR at
    FAR 1e-3 counts each query against its own person's template (genuine) and every other
    person's (impostor)."""
    asked = data if queries is None else queries
    people = np.asarray(data.people)
    first: dict[str, list[int]] = {}
    for i, person in enumerate(people):
        first.setdefault(person, []).append(i)
    start = enrolled_photos if queries_from is None else queries_from
    enrolled_idx = [i for idx in first.values() if len(idx) > start for i in idx[:enrolled_photos]]
    query_idx = [i for idx in first.values() if len(idx) > start for i in idx[start:]]
    stranger_idx = [i for idx in first.values() if len(idx) == 1 for i in idx]
    gallery, listed = templates(data.vectors[enrolled_idx], people[enrolled_idx].tolist())  # one per person, as the service
    gallery_people = np.asarray(listed)

    def answer(idx: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sims = asked.vectors[idx] @ gallery.T
        best = sims.argmax(axis=1)
        return gallery_people[best], sims[np.arange(len(idx)), best], sims

    named, top, sims = answer(query_idx)
    right = (named == people[query_idx]) & asked.found[query_idx]
    can_name = asked.found[query_idx] & ~asked.gone[query_idx]
    correct = right & can_name & (top >= threshold)
    _, stranger_top, _ = answer(stranger_idx)
    stranger_named = asked.found[stranger_idx] & ~asked.gone[stranger_idx] & (stranger_top >= threshold)
    n_named = int(stranger_named.sum())
    own = people[query_idx][:, None] == gallery_people[None, :]
    with_face = asked.found[query_idx]
    tar = tar_at_far(sims[own & with_face[:, None]], sims[~own & with_face[:, None]], FAR)[0] if with_face.any() else float("nan")
    return {"enrolled_people": len(set(gallery_people.tolist())), "photos_enrolled_each": enrolled_photos, "queries": len(query_idx),
            "strangers": len(stranger_idx), "no_face": float(1 - asked.found[query_idx].mean()) if query_idx else float("nan"),
            "top1": float(right.mean()) if query_idx else float("nan"),
            "named_correctly": float(correct.mean()) if query_idx else float("nan"), "threshold": threshold,
            "strangers_named": n_named / max(1, len(stranger_idx)), "strangers_named_ucb95": rate_upper_bound(n_named, len(stranger_idx)),
            # a query whose face was not found counts as a miss in top1, and is left out of the TAR
            f"tar_at_far_{FAR:g}": tar}


def distorted_copies(paths: Sequence[Path], kind: str, folder: Path) -> list[Path]:
    """Each photo under distortion `kind` (evaluation/photo_distortions.py), written once as a
    PNG under `folder/kind/` (the same pixels every run: the seed is the photo's name)."""
    from PIL import Image

    out = []
    for path in paths:
        target = folder / kind / path.parent.name / f"{path.stem}.png"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = distort(np.asarray(Image.open(path).convert("RGB")), kind, seed_of(path.name, kind))
            with atomic_write(target) as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")
        out.append(target)
    return out


@dataclass(frozen=True)
class Seer:
    """The service's detection (subject face, no fallback) and embedder, loaded once for a run."""

    pipeline: FacePipeline
    embedder: Embedder
    model_id: str  # the embeddings cache's key


def load_seer(weights: str | None, runtime: str = "auto") -> Seer:
    from core.embedding.runtime import make_embedder
    from core.faces.pipeline import SERVICE_PIPELINE, load_pipeline
    from core.models.backbone import load_backbone
    from evaluation.embeddings import embedder_id

    backbone = load_backbone(weights, "cpu")
    embedder = make_embedder(backbone, "cpu", 64, runtime)
    return Seer(load_pipeline(SERVICE_PIPELINE), embedder, embedder_id(backbone.model_id, embedder.runtime))


def embed(names: Sequence[str], people: dict[str, list[Path]], seer: Seer, cache: Path, kind: str | None = None) -> Embedded:
    """What `seer` makes of every photo of `names` (under distortion `kind`, when given)."""
    from core.faces.quality import assess
    from evaluation.embeddings import embed_samples

    samples = [Sample(name, path, "clean", path.stem) for name in names for path in people[name]]
    if kind is not None:
        copies = distorted_copies([s.path for s in samples], kind, cache / "real-photos")
        samples = [Sample(s.identity, copy, kind, s.source) for s, copy in zip(samples, copies)]
    vectors, faces, crops = embed_samples(samples, seer.pipeline, seer.embedder, seer.model_id, cache)
    found = np.array([f.path not in UNDETECTED_PATHS for f in faces])
    gone = np.array([_gone(assess, crop, face) for crop, face in zip(crops, faces)])
    return Embedded([s.identity for s in samples], [s.path for s in samples], vectors, found, gone)


def distorted_queries(report: Embedded, names: Sequence[str], people: dict[str, list[Path]], seer: Seer, cache: Path,
                      threshold: float, kinds: Sequence[str]) -> dict:
    """One clean photo enrolled per person, the other photos and the strangers' under each
    distortion in turn: what the service answers, per kind."""
    return {kind: one_photo_enrolled(report, threshold, queries=embed(names, people, seer, cache, kind)) for kind in kinds}


def _gone(assess, crop, face: DetectedFace) -> bool:
    return bool(assess(crop.permute(1, 2, 0).numpy(), face.box, face.score).gone)


def model_threshold_of(weights: str | None) -> float:
    from core.models.backbone import default_weights
    from core.models.thresholds import model_threshold

    return model_threshold(weights or default_weights())


def run(data: Path, pairs_file: Path | None, weights: str | None, exclude: set[str], cache: Path, runtime: str = "auto",
        identify_threshold: float | None = None, kinds: Sequence[str] = ()) -> dict:
    people = folder_people(data)
    sets = carve(list(people), exclude)
    seer = load_seer(weights, runtime)
    choose = embed(sets["choose"], people, seer, cache)
    report = embed(sets["report"], people, seer, cache)
    chosen = verification_1to1(choose)
    threshold = model_threshold_of(weights) if identify_threshold is None else identify_threshold
    for_strangers = stranger_threshold(choose)
    out = {"data": str(data), "weights": weights, "people": {s: len(v) for s, v in sets.items()}, "excluded": len(exclude),
           "threshold_for_strangers": {"rate": TARGET_STRANGER_RATE, "confidence": CONFIDENCE, "chosen_on": "choose", "threshold": for_strangers,
                                       "report": one_photo_enrolled(report, for_strangers)},
           "verification_1to1": {"choose": chosen, "report": verification_1to1(report, threshold=chosen["threshold"])},
           "one_photo_enrolled": {"choose": one_photo_enrolled(choose, threshold), "report": one_photo_enrolled(report, threshold)},
           "two_photos_enrolled": {"report": one_photo_enrolled(report, threshold, enrolled_photos=2)},
           # paired: the people with three or more photos, the same queries (their third photo on), one or two enrolled
           "second_photo": {s: {k: one_photo_enrolled(d, threshold, k, queries_from=2) for k in (1, 2)} for s, d in (("choose", choose), ("report", report))}}
    if kinds:
        out["distorted"] = {"report": distorted_queries(report, sets["report"], people, seer, cache, threshold, kinds)}
    chosen = choose_clustering(choose)
    out["clustering"] = {"choose": chosen, "report_at_chosen": clustering(report, chosen["chosen"]["max_distance"], chosen["chosen"]["method"]),
                         "report_at_default": clustering(report)}
    if pairs_file is not None:
        allowed = set(sets["choose"]) | set(sets["report"])
        pairs = [p for p in read_pairs(pairs_file) if p[0] in allowed and p[2] in allowed]
        both = Embedded(choose.people + report.people, choose.paths + report.paths, np.concatenate([choose.vectors, report.vectors]),
                        np.concatenate([choose.found, report.found]), np.concatenate([choose.gone, report.gone]))
        vector_of = {(p, int(path.stem.rsplit("_", 1)[1])): v for p, path, v in zip(both.people, both.paths, both.vectors)}
        out["lfw_protocol"] = lfw_protocol(pairs, vector_of)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a folder per person (LFW's lfw/)")
    ap.add_argument("--pairs", type=Path, default=None, help="LFW's pairs file (pairs-dev.txt)")
    ap.add_argument("--weights", default=None, help="pretrained name, weights file or model folder (default: the service's)")
    ap.add_argument("--exclude", type=Path, default=DEFAULT_TRAIN_PEOPLE,
                    help="people never reported on (trained on): a split file")
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx", "onnx-int8"])
    ap.add_argument("--threshold", type=float, default=None, help="the identification threshold (default: the model's)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="distortions of the report people's queries, comma-separated ('' for clean photos only)")
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--report", type=Path, default=Path("reports/real-photos.json"))
    args = ap.parse_args()
    exclude = set(read_split(args.exclude)) if args.exclude and args.exclude.is_file() else set()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown distortion(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    result = run(args.data, args.pairs, args.weights, exclude, args.cache, args.runtime, args.threshold, kinds)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("data",)}, indent=1))


if __name__ == "__main__":
    main()
