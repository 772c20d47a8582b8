"""`faceid`: one command for weights, evaluation, training, export, the gallery and the service.

The top of the project: it stands on app/, training/ and evaluation/, and each subcommand
imports what it needs only when it runs, so `faceid --help` does not load torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.data.dataset import DEFAULT_TEST_SPLIT, DEFAULT_TRAIN_PEOPLE, DEFAULT_VAL_SPLIT
from core.errors import FaceIdError


def _weights(args: argparse.Namespace) -> int:
    from core.models.pretrained import WeightsNote, ensure_pretrained

    path = ensure_pretrained(args.name, offline=args.offline)
    note = WeightsNote.read(path)
    print(f"{args.name}: {path}\n  source: {note.source}\n  sha256: {note.sha256}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from core.photos.descriptor import PHOTO_THRESHOLD
    from evaluation.evaluate import EvaluationRun, evaluate

    photo_threshold = PHOTO_THRESHOLD if args.photo_threshold is None else args.photo_threshold
    report = evaluate(EvaluationRun(
        data=args.data, split=args.split, distractors=args.distractors, weights=args.weights, cache_dir=args.cache, use_fallback=not args.no_fallback,
        retry_enhanced=not args.no_retry, device=args.device, plots=args.plots, threshold=args.threshold, runtime=args.runtime,
        photo_threshold=None if args.no_photo_evidence else photo_threshold, baseline=None if args.baseline == "none" else args.baseline,
    ))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    per = ", ".join(f"{k} {v:.3f}" for k, v in report["per_distortion"].items())
    extra = f" ({d['people']} of them distractors)" if (d := report.get("distractors")) else ""
    print(f"top-1 {report['top1']:.4f} over {report['n_queries']} queries, {report['n_identities']} identities in the gallery{extra}")
    print(f"per distortion: {per}")
    slo = report["source_left_out"]
    slo_per = ", ".join(f"{k} {v:.3f}" for k, v in slo.get("per_distortion", {}).items())
    print(f"source left out: {slo['top1']:.4f} ({slo['n_queries']} queries): {slo_per}")
    recall = ", ".join(f"{k} {v['found']:.3f}" for k, v in report["detection_recall"].items())
    print(f"detection recall (IoU >= 0.5 with the clean photo's face): {recall}")
    left = ", ".join(f"{k} {v['n']} queries top-1 {v['top1']:.3f}" for k, v in report["face_left"].items() if v["n"])
    print(f"by share of the face blown out: {left}")
    o = report["open_set"]
    target = "none (no face found in any query)" if o["threshold_for_target"] is None else f"{o['threshold_for_target']:.3f}"
    print(f"as the service answers (threshold {o['threshold']:.3f}): {o['overall']['named_correctly']:.3f} named correctly, "
          f"{o['overall']['strangers_named']:.3f} of strangers named (95% bound {o['overall']['strangers_named_ucb95']:.3f}); "
          f"{o['target_stranger_rate']:.0%} of strangers at its 95% bound at threshold {target}")
    if (p := report.get("photo_evidence")) is not None:
        both = ", ".join(f"{k} {v['face_and_photo']:.3f}" for k, v in p["per_distortion"].items())
        print(f"face + photo evidence (photo threshold {p['threshold']:.2f}): top-1 {p['face_and_photo_top1']:.4f} "
              f"(face only {p['face_only_top1']:.4f}): {both}")
        print(f"photo evidence names {p['strangers_named_by_photo']:.4f} of strangers' photos, "
              f"{p['other_photos_of_enrolled']['named_another_person']:.4f} of enrolled people's other photos for someone else; "
              f"as the service answers: {p['open_set']['named_correctly']:.3f} named correctly, {p['open_set']['strangers_named']:.3f} of strangers named")
    if (g := report.get("clean_guard")) is not None:
        lo, hi = g["tar_interval"]
        dlo, dhi = g["difference_interval"]
        print(f"clean TAR@FAR={g['far']:g} {g['tar']:.3f} ({g['confidence']:.0%} interval over {g['people']} people {lo:.3f}-{hi:.3f}); "
              f"{g['baseline']} {g['baseline_tar']:.3f}, difference {g['difference']:+.3f} ({dlo:+.3f} to {dhi:+.3f}, paired)")
    print(f"report: {args.report}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from core.data.dataset import read_split, split_identities, write_split

    exclude = read_split(args.exclude) if args.exclude else None
    ids = split_identities(args.data, args.n_val, args.seed, exclude)
    note = f", none of {args.exclude.name}" if args.exclude else ""
    write_split(args.out, ids, f"{len(ids)} held-out identities, seed {args.seed}, from {args.data.name}{note}")
    print(f"wrote {len(ids)} identities to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.stage == "all":
        from training.config import TrainConfig
        from training.schedule import run

        out = run(args.data or TrainConfig().data, args.out, args.runs, list(args.set or []), args.resume)
        print(f"exported the schedule's model to {out}")
        return 0
    from training.config import CONFIGS_DIR, load_config
    from training.loop import fit
    from training.stages import BUILDERS

    overrides = list(args.set or []) + ([f"data={args.data}"] if args.data else [])
    if args.init:
        overrides.append(f"init={args.init}")
    config = load_config(args.config or CONFIGS_DIR / f"{args.stage}.yaml", [f"stage={args.stage}", *overrides])
    best = fit(BUILDERS[args.stage](config), resume=args.resume)
    print(f"best checkpoint: {best}")
    return 0


def _train_box_regressor(args: argparse.Namespace) -> int:
    from training.box_regressor import train

    card = train(args.data, args.val_split, args.test_split, args.out, args.epochs, args.seed)
    print(json.dumps({k: card[k] for k in ("threshold", "validation", "test")}, indent=1))
    print(f"wrote {args.out}")
    return 0


def _teacher_people(args: argparse.Namespace) -> set[str]:
    """The people `train-head` and `distill` leave out; their --data folder must exist."""
    from core.data.dataset import read_split

    for folder in [args.data, *args.also]:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (a folder per person, like LFW's lfw/)")
    return set(read_split(args.exclude)) if args.exclude else set()


def _train_head(args: argparse.Namespace) -> int:
    from training.head_refit import RefitConfig, run

    exclude = _teacher_people(args)
    config = RefitConfig(steps=args.steps, anchor=args.anchor, copies=args.copies, seed=args.seed)
    out = run(args.data, args.base, args.teacher, args.out, exclude, config, also=args.also)
    print(f"wrote {out}; export it with: faceid export --ckpt {out} --out DIR")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from core.device import resolve_device
    from training.backbone_distill import DistillConfig, run

    exclude = _teacher_people(args)
    given = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "anchor", "copies", "per_person", "seed")}
    config = DistillConfig(**{k: v for k, v in given.items() if v is not None})  # unset: training/backbone_distill.py's defaults
    out = run(args.data, args.base, args.teacher, args.out, exclude, config, device=resolve_device(args.device), resume=args.resume, also=args.also)
    print(f"wrote {out}; export it with: faceid export --ckpt {out} --out DIR")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export

    out = export(args.ckpt, args.out, half=not args.fp32, threshold_report=args.threshold_from, verify_report=args.verify_from)
    what = str(args.ckpt[0]) if len(args.ckpt) == 1 else f"the mean of {len(args.ckpt)} checkpoints"
    print(f"exported {what} to {out}")
    return 0


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena; with a thread pool running
    torch, resident memory then grows for minutes (MALLOC_ARENA_MAX does the same, set
    before start). Best effort: other C libraries have no such setting."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import Settings
    from app.gallery.sqlite import check_data_dir
    from app.http.connection_limits import uvicorn_options
    from app.http.keys import KeyRing
    from app.main import create_app
    from app.wiring import open_settings_store, set_serving_threads

    settings = Settings()
    check_data_dir(settings.data_dir)  # one clear line, not a traceback from the lifespan
    KeyRing.load(settings.api_key.get_secret_value() if settings.api_key is not None else None, settings.api_keys_file)  # likewise
    open_settings_store(settings).close()  # and a key the encrypted gallery needs, or a database that cannot be reached
    _limit_malloc_arenas()
    set_serving_threads(settings)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", **uvicorn_options(settings.connection_limits()))
    return 0


def _probe(args: argparse.Namespace) -> int:
    """The container healthcheck: 0 when /readyz answers 200. It sends FACEID_API_KEY when the
    environment holds one, so the probe works with the key set (and the key is in no argv)."""
    import os
    import urllib.error
    import urllib.request

    key = os.environ.get("FACEID_API_KEY")
    request = urllib.request.Request(args.url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"faceid probe: {args.url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"faceid probe: {args.url} answered {status}", file=sys.stderr)
        return 1
    return 0


def _gallery_settings(args: argparse.Namespace):
    from app.config import Settings

    return Settings(data_dir=args.data_dir) if args.data_dir is not None else Settings()


def _gallery_import(args: argparse.Namespace) -> int:
    from app.gallery.audit import COMMAND_LINE
    from app.http.audit import Trail
    from app.usecases.bulk import import_folder
    from app.usecases.portable import import_file
    from app.wiring import build_engine, open_collections

    settings = _gallery_settings(args)
    if not args.path.exists():
        raise FileNotFoundError(f"{args.path}: no such folder or file")
    engine = build_engine(settings)
    collections = open_collections(settings, engine.model_id)
    try:
        gallery = collections.get(args.collection).gallery
        if args.path.is_file():  # a gallery export
            with open(args.path, "rb") as stream:
                done = import_file(engine, gallery, stream, Trail("import", args.collection, COMMAND_LINE))
            print(f"imported {done.persons} persons and {done.faces} faces from {args.path} ({done.reembedded} re-embedded from their crops)")
            return 0
        result = import_folder(engine, gallery, settings, args.path, args.batch, args.confirm_copies, args.collection)
    finally:
        collections.close()
    print(f"enrolled {result.added} faces; {result.skipped} already there; {result.described} given photo evidence; "
          f"{len(result.refused)} refused")
    for line in result.refused[:20]:
        print(f"  refused {line}")
    return 0


def _gallery_export(args: argparse.Namespace) -> int:
    from app.usecases.portable import export_collection
    from app.wiring import build_engine, open_collections

    settings = _gallery_settings(args)
    collections = open_collections(settings, build_engine(settings).model_id)
    try:
        args.file.parent.mkdir(parents=True, exist_ok=True)
        with open(args.file, "wb") as out:
            header = export_collection(collections.get(args.collection), out, args.crops)
    finally:
        collections.close()
    print(f"exported {header.persons} persons and {header.faces} faces of collection {header.collection} to {args.file}"
          f"{' with their crops' if args.crops else ''}")
    return 0


def _gallery_migrate(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.gallery.migrate import migrate
    from app.gallery.store import open_store

    settings = Settings()
    password, sealer = settings.store_password(), settings.sealer()  # FACEID_STORE_PASSWORD_FILE, FACEID_ENCRYPTION_KEY_FILE
    source = open_store(args.source, password, sealer=sealer)  # rows are copied as they are: sealed ones stay sealed
    try:
        target = open_store(args.target, password, sealer=sealer)
        try:
            result = migrate(source, target, args.batch)
        finally:
            target.close()
    finally:
        source.close()
    print(f"{result.persons} persons and {result.faces} faces in {target.location} ({result.copied} copied now); "
          "counts and every embedding checked")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from app.gallery.records import AuditQuery
    from app.gallery.store import open_store

    settings = _gallery_settings(args)
    collection = None if args.collection == "default" else args.collection
    store = open_store(settings.store_location(), settings.store_password(), 1, False, collection, settings.sealer())
    try:
        entries, total = store.audit_page(AuditQuery(args.since, args.until, args.person, args.key, args.action), args.offset, args.limit)
    finally:
        store.close()
    for e in entries:
        ev = e.event
        print("\t".join([ev.at, ev.key_id or "-", ev.collection, ev.action, ",".join(ev.persons) or "-", ev.outcome, ev.detail or ""]))
    print(f"{len(entries)} of {total} entries", file=sys.stderr)
    return 0


def _gallery_compact(args: argparse.Namespace) -> int:
    from app.gallery.store import open_store

    settings = _gallery_settings(args)
    collection = None if args.collection == "default" else args.collection
    store = open_store(settings.store_location(), settings.store_password(), 1, False, collection, settings.sealer())
    try:
        print(f"{store.location}: {store.compact()}")
    finally:
        store.close()
    return 0


def _gallery_rotate_key(args: argparse.Namespace) -> int:
    from app.gallery.snapshot import Snapshot
    from app.gallery.store import collection_folder, open_store

    settings = _gallery_settings(args)
    sealer = settings.sealer()
    if not sealer.on:
        raise ValueError("set FACEID_ENCRYPTION_KEY_FILE to the key file, the key to seal with on its first line")
    collection = None if args.collection == "default" else args.collection
    store = open_store(settings.store_location(), settings.store_password(), 1, False, collection, sealer)
    folder = settings.data_dir if collection is None else collection_folder(settings.data_dir, collection)
    Snapshot(folder).remove()  # it may hold the embeddings in the clear, or under the old key; the next shutdown saves a sealed one
    total = 0
    try:
        for n, resealed in enumerate(store.reseal(args.batch), 1):
            total += resealed
            print(f"batch {n}: {resealed} resealed", flush=True)
    finally:
        store.close()
    print(f"{total} rows resealed with key {sealer.current}; the saved index snapshot was removed (the next shutdown saves a sealed one)")
    return 0


def _gallery_reembed(args: argparse.Namespace) -> int:
    from app.usecases.bulk import reembed
    from app.wiring import build_engine, open_settings_store

    settings = _gallery_settings(args)
    engine = build_engine(settings)
    store = open_settings_store(settings)
    try:
        print(f"re-embedded {reembed(engine, store)} faces")
    finally:
        store.close()
    return 0


def _client(args: argparse.Namespace):
    import os

    from faceid.client import FaceIdClient

    return FaceIdClient(args.url, key=args.key or os.environ.get("FACEID_API_KEY"), collection=args.collection)


def _identify(args: argparse.Namespace) -> int:
    with _client(args) as faceid:
        answer = faceid.identify(args.photo, top_k=args.top_k, threshold=args.threshold)
    if args.json:
        print(answer.model_dump_json(indent=2))
        return 0
    for face in answer.faces:
        who = f"{face.match.person_id} ({face.match.similarity:.3f}, by {' and '.join(face.evidence)})" if face.match else "unknown"
        print(f"{[round(v) for v in face.box]}: {who}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if (args.photo2 is None) == (args.person is None):
        raise ValueError("give a second photo or --person, not both or neither")
    with _client(args) as faceid:
        answer = faceid.verify(args.photo, args.photo2, args.person, args.threshold)
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        similarity = "no face" if answer.similarity is None else f"{answer.similarity:.3f}"
        print(f"{'same' if answer.same else 'different'}: similarity {similarity}, threshold {answer.threshold:.3f}"
              f"{', by ' + ' and '.join(answer.evidence) if answer.evidence else ''}")
    return 0 if answer.same else 1


def _teacher_arguments(p: argparse.ArgumentParser) -> None:
    """What `train-head` and `distill` learn from: the photos and the teacher."""
    p.add_argument("--data", type=Path, required=True, help="a folder per person (LFW's lfw/); its train people are used (core/data/people.py)")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's ONNX file (e.g. ../shared/teachers/MobileFaceNet.onnx)")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another folder per person to learn from, every person of it (repeatable; e.g. CelebA laid out by identity); "
                        "people the teacher finds alike to --data's chosen or reported people are left out")
    p.add_argument("--exclude", type=Path, default=DEFAULT_TRAIN_PEOPLE, help="people never used (a split file; default: FACECOM's training people)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("weights", help="obtain pretrained FaceNet weights into the models cache (models/pretrained/)")
    p.add_argument("--name", default="casia-webface", choices=["casia-webface", "vggface2"])
    p.add_argument("--offline", action="store_true", help="skip the download; convert the shipped graph")
    p.set_defaults(func=_weights)

    p = sub.add_parser("evaluate", help="gallery-retrieval evaluation of a backbone on a data set folder")
    p.add_argument("--data", type=Path, required=True,
                   help="FACECOM (<id>/*.jpg, <id>/distortion/), <id>/clean/ + <id>/distortion/, or gallery/ + queries/")
    p.add_argument("--weights", default=None, help="pretrained name, weights file or model folder (default: the service's)")
    p.add_argument("--split", type=Path, default=None, help=f"evaluate only these identities (e.g. {DEFAULT_VAL_SPLIT.name})")
    p.add_argument("--distractors", type=Path, default=None,
                   help="a split file of other people whose clean photos join the gallery, never queried (a larger gallery)")
    p.add_argument("--report", type=Path, default=Path("reports/evaluation.json"))
    p.add_argument("--plots", type=Path, default=None, help="folder for PNG plots")
    p.add_argument("--cache", type=Path, default=Path(".cache"))
    p.add_argument("--no-fallback", action="store_true", help="no fallback box for images without a detected face")
    p.add_argument("--no-retry", action="store_true", help="no detection retries on enhanced copies")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threshold", type=float, default=None, help="for the open-set figures (default: the service's for the model)")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx", "onnx-int8"], help="the embedder's, as FACEID_RUNTIME")
    p.add_argument("--photo-threshold", type=float, default=None, help="photo evidence's (default: the service's)")
    p.add_argument("--no-photo-evidence", action="store_true", help="face evidence alone (no photo evidence figures)")
    p.add_argument("--baseline", default="casia-webface",
                   help="the clean-verification guard's baseline: pretrained name, weights file or model folder; none: no guard")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("split", help="write a seeded list of held-out (validation or test) identities")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", type=Path, default=None, help="a split whose identities must not be drawn")
    p.add_argument("--out", type=Path, default=DEFAULT_VAL_SPLIT)
    p.set_defaults(func=_split)

    p = sub.add_parser("train", help="fine-tune the backbone: stage1 (ArcFace), stage2 (contrastive), or all: the packaged schedule and its export")
    p.add_argument("stage", choices=["stage1", "stage2", "all"],
                   help="all: every stage of training/configs/schedule.yaml, then the export with the validation threshold")
    p.add_argument("--data", type=Path, default=None, help="the training data set folder (default: the config's)")
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: the packaged training/configs/<stage>.yaml)")
    p.add_argument("--init", default=None, help="backbone to start from; stage2: the stage-1 checkpoint")
    p.add_argument("--out", type=Path, default=Path("runs/facecom-ft"), help="all: the exported model's folder")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="all: where each stage's checkpoints go")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser("train-box-regressor", help="train the net that places the face where MTCNN finds none (glare, rain, noise)")
    p.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    p.add_argument("--val-split", type=Path, default=DEFAULT_VAL_SPLIT, help="people the threshold is chosen on")
    p.add_argument("--test-split", type=Path, default=DEFAULT_TEST_SPLIT, help="people only measured on")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("models/box-regressor"))
    p.set_defaults(func=_train_box_regressor)

    p = sub.add_parser("train-head", help="refit the backbone's head on a teacher's similarity structure (training/head_refit.py), the rest frozen")
    _teacher_arguments(p)
    p.add_argument("--base", required=True,
                   help="the model whose head is refitted (a model folder, weights file or pretrained name); the shipped model is already "
                        "refitted, so start from the stage-1 export (e.g. runs/soup)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--anchor", type=float, default=0.3, help="weight of staying near the starting head's embeddings")
    p.add_argument("--copies", type=int, default=2, help="training-distorted copies of each photo beside the clean one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/head/refit.pt"), help="the checkpoint to write (for faceid export)")
    p.set_defaults(func=_train_head)

    p = sub.add_parser("distill", help="train the whole backbone on a teacher's similarity structure (training/backbone_distill.py)")
    _teacher_arguments(p)
    p.add_argument("--base", required=True, help="the model to start from (a model folder, weights file or pretrained name)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="the body's learning rate (the head's stays the refit's)")
    p.add_argument("--anchor", type=float, default=None, help="weight of staying near the starting model's embeddings")
    p.add_argument("--copies", type=int, default=None, help="training-distorted copies of each photo beside the clean one")
    p.add_argument("--per-person", type=int, default=None,
                   help="faces each person drawn brings to a batch: different photos, or one photo seen two ways (1: photos at random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint where it stopped")
    p.add_argument("--out", type=Path, default=Path("runs/distill/last.pt"), help="the checkpoint to write (for faceid export)")
    p.set_defaults(func=_distill)

    p = sub.add_parser("export", help="export a checkpoint's backbone, or the mean of several runs' (a model soup), with a model card")
    p.add_argument("--ckpt", type=Path, required=True, action="append",
                   help="a checkpoint; given again, runs from the same start whose weights are averaged")
    p.add_argument("--out", type=Path, required=True, help="folder, e.g. models/facecom-ft")
    p.add_argument("--fp32", action="store_true", help="keep float32 (default float16)")
    p.add_argument("--threshold-from", type=Path, action="append", default=None,
                   help="a faceid evaluate report on validation people or a real-photo report: its threshold for 1%% of strangers named "
                        "becomes the default (given again: the highest of them)")
    p.add_argument("--verify-from", type=Path, default=None,
                   help="a real-photo report (python -m evaluation.real_photos): its 1:1 threshold on the choose people becomes /verify's default")
    p.set_defaults(func=_export)

    p = sub.add_parser("serve", help="start the HTTP service (settings from FACEID_* variables)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_serve)

    p = sub.add_parser("probe", help="exit 0 if the service is ready (the container healthcheck; sends FACEID_API_KEY if set)")
    p.add_argument("--url", default="http://127.0.0.1:8000/readyz")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=_probe)

    for name, helptext in (("identify", "who is in a photo: ask a running service"),
                           ("verify", "are two photos, or a photo and an enrolled person, one person: ask a running service "
                                      "(exit 0 same, 1 different)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("photo", type=Path)
        if name == "verify":
            p.add_argument("photo2", type=Path, nargs="?", default=None, help="a second photo (or --person)")
            p.add_argument("--person", default=None, help="an enrolled person's id")
        else:
            p.add_argument("--top-k", type=int, default=None)
        p.add_argument("--threshold", type=float, default=None)
        p.add_argument("--url", default="http://127.0.0.1:8000")
        p.add_argument("--key", default=None, help="the API key (default: FACEID_API_KEY)")
        p.add_argument("--collection", default=None, help="the collection (default: the default one)")
        p.add_argument("--json", action="store_true", help="the whole answer, as JSON")
        p.set_defaults(func=_identify if name == "identify" else _verify)

    p = sub.add_parser("audit", help="the audit log: when, which key, which collection, what, which persons, how it ended (tab-separated)")
    p.add_argument("--collection", default="default")
    p.add_argument("--person", default=None, help="only what wrote, named or erased this person")
    p.add_argument("--key", default=None, help="only what this key id did")
    p.add_argument("--action", default=None)
    p.add_argument("--since", default=None, help="from this time on (ISO 8601, UTC)")
    p.add_argument("--until", default=None, help="before this time")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--data-dir", type=Path, default=None, help="the gallery's folder (default: FACEID_DATA_DIR)")
    p.set_defaults(func=_audit)

    p = sub.add_parser("gallery", help="bulk operations on the service's gallery (FACEID_DATA_DIR)")
    gsub = p.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    g = gsub.add_parser("import", help="enrol the clean (gallery) photos of a data set folder (resumable), or add a gallery export file")
    g.add_argument("path", type=Path, help="a data set folder, or a file `faceid gallery export` (or /export) made")
    g.add_argument("--batch", type=int, default=32, help="images per detection/embedding batch")
    g.add_argument("--confirm-copies", action="store_true",
                   help="enrol photos that copy a photo enrolled for another person (as /enroll's confirm_copy); refused otherwise")
    g.set_defaults(func=_gallery_import)
    g = gsub.add_parser("reembed", help="re-embed every stored face with the configured model")
    g.set_defaults(func=_gallery_reembed)
    g = gsub.add_parser("compact", help="rewrite the store's tables, so that nothing deleted rows left stays in its files "
                                        "(PostgreSQL: VACUUM FULL, which locks them while it runs)")
    g.set_defaults(func=_gallery_compact)
    g = gsub.add_parser("rotate-key", help="seal every stored template with the key on FACEID_ENCRYPTION_KEY_FILE's first line "
                                           "(resumable; also seals a gallery enrolled before encryption was on)")
    g.add_argument("--batch", type=int, default=500, help="rows per transaction")
    g.set_defaults(func=_gallery_rotate_key)
    g = gsub.add_parser("export", help="the collection in one file: persons, faces, embeddings, photo evidence (and crops)")
    g.add_argument("file", type=Path)
    g.add_argument("--crops", action="store_true", help="also the face crops, so a service running another model can import it")
    g.set_defaults(func=_gallery_export)
    for g in gsub.choices.values():
        g.add_argument("--data-dir", type=Path, default=None, help="the gallery's folder (default: FACEID_DATA_DIR)")
    for name in ("import", "export", "compact", "rotate-key"):
        gsub.choices[name].add_argument("--collection", default="default", help="which collection (default: the default one)")
    g = gsub.add_parser("migrate", help="copy a gallery between stores, SQLite ⇄ PostgreSQL (resumable; checks counts and embeddings)")
    g.add_argument("source", help="a postgresql:// URL, a gallery.sqlite3 file or the folder holding it")
    g.add_argument("target", help="the same kinds; an empty gallery, or one an interrupted migrate of this source left")
    g.add_argument("--batch", type=int, default=1000, help="faces per transaction")
    g.set_defaults(func=_gallery_migrate)
    return parser


def _client_errors() -> tuple[type[Exception], ...]:
    """What the client subcommands report in one line: the service's refusal, or no service."""
    if "faceid.client" not in sys.modules:
        return ()
    import httpx

    from faceid.client import FaceIdError as ServiceError

    return ServiceError, httpx.HTTPError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # faiss narrates its search for a CPU-specific build at INFO
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (FaceIdError, ValueError, FileNotFoundError) as exc:  # LayoutError, ModelCardError are ValueErrors
        print(f"faceid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, _client_errors()):
            raise
        print(f"faceid {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
