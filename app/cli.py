"""`faceid`: one command for weights, evaluation, training, export, the gallery and the service.

Subcommands import their heavy dependencies only when run, so `faceid --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.errors import FaceIdError


def _weights(args: argparse.Namespace) -> int:
    from models.weights import ensure_pretrained

    path = ensure_pretrained(args.name, offline=args.offline)
    note = json.loads(path.with_suffix(".json").read_text())
    print(f"{args.name}: {path}\n  source: {note['source']}\n  sha256: {note['sha256']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from evaluation.facecom import DATASET_PIPELINE, read_split, scan
    from evaluation.run import embed_samples, report_from_embeddings
    from models.backbone import load_backbone, resolve_device
    from models.embedder import Embedder
    from models.faces import FacePipeline

    identities = read_split(args.split) if args.split else None
    samples = scan(args.data, identities)
    device = resolve_device(args.device)
    backbone = load_backbone(args.weights, device)
    config = replace(DATASET_PIPELINE, use_fallback=not args.no_fallback, retry_enhanced=not args.no_retry)
    pipeline = FacePipeline(config, device)
    embeddings, faces = embed_samples(samples, pipeline, Embedder(backbone.net, device), backbone.model_id, args.cache)
    report = report_from_embeddings(samples, embeddings, faces)
    report["weights"] = backbone.source
    report["model_id"] = backbone.model_id
    report["pipeline"] = {"use_fallback": config.use_fallback, "retry_enhanced": config.retry_enhanced}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    if args.plots:
        from evaluation.plots import write_all

        write_all(report, embeddings, [s.identity for s in samples], [s.is_clean for s in samples], args.plots)
    per = ", ".join(f"{k} {v:.3f}" for k, v in report["per_distortion"].items())
    print(f"top-1 {report['top1']:.4f} over {report['n_queries']} queries, {report['n_identities']} identities")
    print(f"per distortion: {per}")
    print(f"source left out: {report['source_left_out']['top1']:.4f} ({report['source_left_out']['n_queries']} queries)")
    print(f"report: {args.report}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from evaluation.facecom import split_identities, write_split

    ids = split_identities(args.data, args.n_val, args.seed)
    write_split(args.out, ids, f"{len(ids)} validation identities, seed {args.seed}, from {args.data.name}")
    print(f"wrote {len(ids)} identities to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.loop import fit
    from training.stages import STAGES

    overrides = list(args.set or [])
    if args.init:
        overrides.append(f"init={args.init}")
    config = load_config(args.config, [f"stage={args.stage}", *overrides])
    best = fit(STAGES[args.stage](config), resume=args.resume)
    print(f"best checkpoint: {best}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export

    out = export(args.ckpt, args.out, half=not args.fp32)
    print(f"exported {args.ckpt} to {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    return 0


def _gallery_import(args: argparse.Namespace) -> int:
    from app.gallery.bulk import import_folder

    added, skipped, refused = import_folder(args.dir, args.batch)
    print(f"enrolled {added} faces; {skipped} already there; {len(refused)} refused")
    for line in refused[:20]:
        print(f"  refused {line}")
    return 0


def _gallery_reembed(args: argparse.Namespace) -> int:
    from app.gallery.bulk import reembed

    print(f"re-embedded {reembed()} faces")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from evaluation.facecom import DEFAULT_VAL_SPLIT

    parser = argparse.ArgumentParser(prog="faceid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("weights", help="obtain pretrained FaceNet weights into models/pretrained/")
    p.add_argument("--name", default="casia-webface", choices=["casia-webface", "vggface2"])
    p.add_argument("--offline", action="store_true", help="skip the download; convert the shipped graph")
    p.set_defaults(func=_weights)

    p = sub.add_parser("evaluate", help="gallery-retrieval evaluation of a backbone on a FACECOM-layout folder")
    p.add_argument("--data", type=Path, required=True, help="folder of <id>/*.jpg and <id>/distortion/*.jpg")
    p.add_argument("--weights", default=None, help="pretrained name, weights file or model folder (default: the service's)")
    p.add_argument("--split", type=Path, default=None, help=f"evaluate only these identities (e.g. {DEFAULT_VAL_SPLIT.name})")
    p.add_argument("--report", type=Path, default=Path("reports/evaluation.json"))
    p.add_argument("--plots", type=Path, default=None, help="folder for PNG plots")
    p.add_argument("--cache", type=Path, default=Path(".cache"))
    p.add_argument("--no-fallback", action="store_true", help="no fallback box for images without a detected face")
    p.add_argument("--no-retry", action="store_true", help="no detection retries on enhanced copies")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("split", help="write a seeded list of validation identities")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_VAL_SPLIT)
    p.set_defaults(func=_split)

    p = sub.add_parser("train", help="fine-tune the backbone: stage1 (ArcFace) or stage2 (contrastive)")
    p.add_argument("stage", choices=["stage1", "stage2"])
    p.add_argument("--config", type=Path, default=None, help="YAML config (training/configs/<stage>.yaml)")
    p.add_argument("--init", default=None, help="backbone to start from; stage2: the stage-1 checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a checkpoint's backbone with a model card")
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder, e.g. models/facecom-ft")
    p.add_argument("--fp32", action="store_true", help="keep float32 (default float16)")
    p.set_defaults(func=_export)

    p = sub.add_parser("serve", help="start the HTTP service (settings from FACEID_* variables)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_serve)

    p = sub.add_parser("gallery", help="bulk operations on the service's gallery (FACEID_DATA_DIR)")
    gsub = p.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    g = gsub.add_parser("import", help="enrol the clean photos of a FACECOM-layout folder (resumable)")
    g.add_argument("dir", type=Path)
    g.add_argument("--batch", type=int, default=32, help="images per detection/embedding batch")
    g.set_defaults(func=_gallery_import)
    g = gsub.add_parser("reembed", help="re-embed every stored face with the configured model")
    g.set_defaults(func=_gallery_reembed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FaceIdError, ValueError, FileNotFoundError) as exc:  # LayoutError is a ValueError
        print(f"faceid {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
