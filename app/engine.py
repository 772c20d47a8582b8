"""Pixels → faces → embeddings for the service and its bulk commands, assembled in one place.

`Engine.from_settings` builds the pipeline from the service's settings; `/enroll`,
`/identify` and `faceid gallery import` all go through it, so they detect, choose and crop
faces the same way. Model work runs in worker threads, never on the event loop. Embedding
requests that arrive together are merged into one forward pass (up to `batch_size` faces),
which is where a GPU gains most; detection stays per image, serialised by a lock so
concurrent requests do not oversubscribe the CPU threads torch already uses.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from core.backbone import Backbone, load_backbone, model_threshold
from core.constants import EMBEDDING_DIM
from core.embedder import Embedder
from core.faces import SERVICE_PIPELINE, DetectedFace, FacePipeline, PipelineConfig
from core.images import decode_image


@dataclass(frozen=True)
class FaceCrop:
    face: DetectedFace
    crop: torch.Tensor  # uint8 3×160×160

    def png(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.crop.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        return buf.getvalue()


class Engine:
    def __init__(self, backbone: Backbone, device: str, batch_size: int, max_pixels: int,
                 pipeline_config: PipelineConfig = SERVICE_PIPELINE) -> None:
        self.backbone = backbone
        self.pipeline = FacePipeline(pipeline_config, device)
        self.embedder = Embedder(backbone.net, device, batch_size)
        self.max_pixels = max_pixels
        self._model_lock = threading.Lock()
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self.on_batch = lambda size: None  # metrics hook

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        device = settings.resolved_device()
        return cls(load_backbone(settings.weights, device), device, settings.batch_size, settings.max_pixels)

    @property
    def model_id(self) -> str:
        return self.backbone.model_id

    def default_threshold(self) -> float:
        """The model's evaluated FAR-1e-3 threshold (its card, or the pretrained table)."""
        return model_threshold(self.backbone.source)

    # -- blocking API: worker threads and the command line -------------------------------
    def decode(self, data: bytes, source: str) -> Image.Image:
        return decode_image(data, source, self.max_pixels)

    def detect_images(self, images: Sequence[Image.Image]) -> list[list[FaceCrop]]:
        """Every face of each image, cropped; same-sized images share detection passes."""
        with self._model_lock:
            found = self.pipeline.detect_batch(images)
        return [[FaceCrop(f, self.pipeline.crop(img, f.box)) for f in faces] for img, faces in zip(images, found)]

    def detect_blocking(self, data: bytes, source: str) -> list[FaceCrop]:
        return self.detect_images([self.decode(data, source)])[0]

    @staticmethod
    def subject(faces: Sequence[FaceCrop], source: str) -> FaceCrop:
        """The face an enrolment photo stands for; the one rule for /enroll and bulk import."""
        chosen = FacePipeline.single([f.face for f in faces], source)
        return next(f for f in faces if f.face is chosen)

    def single_face(self, data: bytes, source: str) -> FaceCrop:
        return self.subject(self.detect_blocking(data, source), source)

    def embed_blocking(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """uint8 crops (N×3×160×160, or a list of 3×160×160) → N×512 unit embeddings."""
        if not isinstance(crops, torch.Tensor):
            if not crops:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            crops = torch.stack(list(crops))
        with self._model_lock:
            return self.embedder.embed(crops)

    # -- async API: the routes -------------------------------------------------------------
    async def detect(self, data: bytes, source: str) -> list[FaceCrop]:
        return await run_in_threadpool(self.detect_blocking, data, source)

    async def enrolment_face(self, data: bytes, source: str) -> FaceCrop:
        return await run_in_threadpool(self.single_face, data, source)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def embed(self, crops: list[torch.Tensor]) -> np.ndarray:
        """Embeddings of `crops`, merged with other requests' crops into shared batches."""
        if not crops or self._queue is None:  # nothing to do, or not started: embed directly
            return await run_in_threadpool(self.embed_blocking, crops)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((torch.stack(crops), future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            while size < self.embedder.batch_size and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                size += len(jobs[-1][0])
            try:
                vectors = await run_in_threadpool(self.embed_blocking, torch.cat([crops for crops, _ in jobs]))
                self.on_batch(size)
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for crops, future in jobs:
                if not future.done():
                    future.set_result(vectors[start : start + len(crops)])
                start += len(crops)
