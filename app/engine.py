"""Pixels → faces → embeddings for the service: the shared pipeline plus request batching.

Model work runs in worker threads, never on the event loop. Embedding requests that arrive
together are merged into one forward pass (up to `batch_size` faces), which is where a GPU
gains most; detection stays per image, serialised by a lock so concurrent requests do not
oversubscribe the CPU threads torch already uses.
"""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.backbone import Backbone
from models.embedder import Embedder
from models.faces import DetectedFace, FacePipeline, PipelineConfig
from models.images import decode_image


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
                 pipeline_config: PipelineConfig = PipelineConfig()) -> None:
        self.backbone = backbone
        self.pipeline = FacePipeline(pipeline_config, device)
        self.embedder = Embedder(backbone.net, device, batch_size)
        self.max_pixels = max_pixels
        self._model_lock = threading.Lock()
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self.on_batch = lambda size: None  # metrics hook

    # -- detection (blocking; call from a worker thread) ---------------------------------
    def faces(self, data: bytes, source: str) -> tuple[Image.Image, list[FaceCrop]]:
        img = decode_image(data, source, self.max_pixels)
        with self._model_lock:
            faces = self.pipeline.detect_all(img)
        return img, [FaceCrop(f, self.pipeline.crop(img, f.box)) for f in faces]

    async def detect(self, data: bytes, source: str) -> tuple[Image.Image, list[FaceCrop]]:
        return await run_in_threadpool(self.faces, data, source)

    # -- embedding, batched across requests ------------------------------------------------
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
        if not crops:
            return np.zeros((0, 512), dtype=np.float32)
        if self._queue is None:  # not started (CLI use): embed directly
            return await run_in_threadpool(self._embed_now, torch.stack(crops))
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((torch.stack(crops), future))
        return await future

    def _embed_now(self, batch: torch.Tensor) -> np.ndarray:
        with self._model_lock:
            return self.embedder.embed(batch)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            while size < self.embedder.batch_size and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                size += len(jobs[-1][0])
            try:
                vectors = await run_in_threadpool(self._embed_now, torch.cat([crops for crops, _ in jobs]))
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
