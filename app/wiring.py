"""The one place settings become parts: the engine (models loaded for the device) and the
gallery (its store opened from the location the settings name). The service's lifespan and
the `faceid gallery` commands both build them here."""

from __future__ import annotations

import sys

import torch
from threadpoolctl import threadpool_limits

from app.config import Settings
from app.detector_pool import DetectorPool
from app.engine import Admission, Engine, FaceFinder
from app.gallery.collections import Collections
from app.gallery.gallery import Gallery
from app.gallery.sealing import Sealer
from app.gallery.store import Store, collection_folder, open_store
from core.embedding.runtime import embeds_on_onnx, make_embedder
from core.faces.pipeline import SERVICE_PIPELINE, load_pipeline
from core.models.backbone import load_backbone

# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). The
# event loop waits for it after every request's face work, behind threads that release and
# retake it between torch and numpy calls; at the default it waited a median 2 ms a request
# (docs/design.md).
GIL_SWITCH_S = 0.001


def set_serving_threads(settings: Settings) -> None:
    """For a serving process, before its engine is built. With embeddings on ONNX Runtime (its
    own threads, all cores), torch only detects, one photo per core side by side (see
    app/engine.py), so each detection gets one torch thread: two-threaded detections side by
    side oversubscribed the cores (docs/design.md). The BLAS libraries numpy, scipy and
    OpenCV bring (OpenBLAS, each its own pool) get one thread too: a request's few small
    matrix products woke a pool whose threads then spun on a core for a long while after,
    doubling a request's CPU time (docs/benchmarks.md). And the GIL changes hands sooner
    (GIL_SWITCH_S)."""
    if embeds_on_onnx(settings.resolved_device(), settings.runtime):
        torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    sys.setswitchinterval(GIL_SWITCH_S)


def build_engine(settings: Settings, pipeline: FaceFinder | None = None) -> Engine:
    """The engine for these settings; `pipeline` replaces the service's own face pipeline (tests
    give a wrapped one to hold or watch detection)."""
    device = settings.resolved_device()
    backbone = load_backbone(settings.weights, device)
    pool = None
    if pipeline is None:
        pipeline = load_pipeline(SERVICE_PIPELINE, device, settings.detect_runtime if device == "cpu" else "torch")
        if device == "cpu" and (workers := settings.detect_workers()) > 0:
            pool = DetectorPool(pipeline, workers)
    return Engine(backbone, pipeline, make_embedder(backbone, device, settings.batch_size, settings.runtime), device, settings.max_pixels,
                  detect_max_side=settings.detect_max_side, admission=Admission(settings.max_pending, settings.request_timeout_s),
                  max_image_bytes=settings.max_image_bytes, detector_pool=pool)


def open_settings_store(settings: Settings, sealer: Sealer | None = None) -> Store:
    """The store the settings name: SQLite in FACEID_DATA_DIR, or FACEID_STORE's PostgreSQL."""
    return open_store(settings.store_location(), settings.store_password(), settings.store_pool_size, settings.read_only, None,
                      sealer if sealer is not None else settings.sealer())


def open_gallery(settings: Settings, model_id: str, store: Store | None = None) -> Gallery:
    """The default collection's gallery for these settings, on their store (or on `store`,
    opened by the caller); its snapshot lives in the data folder."""
    return Gallery(store if store is not None else open_settings_store(settings), settings.data_dir, model_id, settings.index_settings())


def open_collections(settings: Settings, model_id: str, store: Store | None = None) -> Collections:
    """Every collection: the default one's gallery now, the others' when first asked for; one
    set of encryption keys for them all."""
    sealer = settings.sealer()

    def named(name: str) -> Gallery:
        store = open_store(settings.store_location(), settings.store_password(), settings.store_pool_size, settings.read_only, name, sealer)
        return Gallery(store, collection_folder(settings.data_dir, name), model_id, settings.index_settings())

    default = Gallery(store if store is not None else open_settings_store(settings, sealer), settings.data_dir, model_id, settings.index_settings())
    return Collections(default, named, lambda name: collection_folder(settings.data_dir, name))
