"""Bulk gallery work from the command line: import a folder, re-embed with a new model."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from app.config import get_settings
from app.engine import FaceCrop
from app.gallery.gallery import STORE_FILE, Gallery
from app.gallery.store import NewFace, Store
from evaluation.facecom import scan
from models.backbone import load_backbone
from models.embedder import Embedder
from models.errors import FaceIdError
from models.faces import FacePipeline, PipelineConfig
from models.images import load_image


def import_folder(root, batch: int = 32) -> tuple[int, int, list[str]]:
    """Enrol each identity's clean photos; photos already stored for that person are skipped,
    so an interrupted import resumes where it stopped."""
    settings = get_settings()
    device = settings.resolved_device()
    backbone = load_backbone(settings.weights, device)
    gallery = Gallery(settings.data_dir, backbone.model_id, settings.index)
    gallery.check_usable()
    pipeline = FacePipeline(PipelineConfig(), device)
    embedder = Embedder(backbone.net, device, settings.batch_size)
    clean = [s for s in scan(root) if s.is_clean]
    todo = [s for s in clean if not gallery.store.has_source(s.identity, s.path.name)]
    added, refused = 0, []
    try:
        for start in tqdm(range(0, len(todo), batch), desc="import"):
            chunk = todo[start : start + batch]
            ready = []
            for sample in chunk:
                try:
                    img = load_image(sample.path, settings.max_pixels)
                    face = pipeline.single(pipeline.detect_all(img), str(sample.path))
                    ready.append((sample, FaceCrop(face, pipeline.crop(img, face.box))))
                except FaceIdError as exc:
                    refused.append(str(exc))
            if not ready:
                continue
            vectors = embedder.embed(torch.stack([c.crop for _, c in ready]))
            for (sample, crop), vector in zip(ready, vectors):
                gallery.enroll(sample.identity, None, [NewFace(sample.path.name, vector, crop.png())])
                added += 1
    finally:
        gallery.close()
    return added, len(clean) - len(todo), refused


def reembed() -> int:
    """Recompute every stored embedding from its stored face crop with the configured model."""
    settings = get_settings()
    device = settings.resolved_device()
    backbone = load_backbone(settings.weights, device)
    store = Store(settings.data_dir / STORE_FILE)
    try:
        rows = [(i, png) for i, png in store.crops() if png is not None]
        if len(rows) != len(store.crops()):
            raise FaceIdError(str(settings.data_dir), "some faces have no stored crop; re-enrol them from their photos")
        embedder = Embedder(backbone.net, device, settings.batch_size)
        updates = []
        for start in tqdm(range(0, len(rows), 256), desc="re-embed"):
            chunk = rows[start : start + 256]
            crops = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1) for _, png in chunk])
            updates += list(zip([i for i, _ in chunk], embedder.embed(crops)))
        store.replace_embeddings(updates, backbone.model_id)
        return len(updates)
    finally:
        store.close()
