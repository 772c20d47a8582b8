"""Pixels → faces → embeddings for the service and its bulk commands, assembled in one place.

`Engine.from_settings` builds the pipeline from the service's settings; `/enroll`,
`/identify` and `faceid gallery import` all go through it, so they decode, detect, choose and
crop faces the same way. Model work runs in worker threads, never on the event loop.

On the CPU an /identify is one worker-thread hop (check, decode, detect, embed, search). As
many photos are detected at once as there are cores, each on one torch thread; a lone request
embeds on every core, requests side by side on one core each (a second ONNX Runtime session), so
no run waits on a core another is using (README, "Design choices, measured"). On CUDA,
embedding requests that arrive together are merged into one forward pass (up to `batch_size`
faces), which is where a GPU gains most, and the device serialises the work.

Work per request is bounded: photos are decoded at most `detect_max_side` pixels on a side, at
most `max_pending` photos are in the engine (then 503 with Retry-After, decided in app/guard.py
before the upload is read), and a request's face work past `request_timeout_s` answers 503
instead of holding its client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.gallery.store import PhotoRecord
from core.constants import DECODE_MAX_SIDE, EMBEDDING_DIM
from core.device import cpu_cores
from core.embedding.embedder import Embedder
from core.embedding.runtime import embeds_on_onnx, make_embedder
from core.errors import NoFaceFound
from core.faces.geometry import fractions_of
from core.faces.pipeline import SERVICE_PIPELINE, Face, FacePipeline, load_pipeline
from core.images import DEFAULT_MAX_BYTES, Decoded, decode_reduced
from core.models.backbone import Backbone, load_backbone
from core.models.thresholds import model_threshold
from core.photos.descriptor import Descriptor, describe, projected, thumbnail

T = TypeVar("T")
P = TypeVar("P")


def set_serving_threads(settings: Settings) -> None:
    """For a serving process, before its engine is built. With embeddings on ONNX Runtime (its
    own threads, all cores), torch only detects, one photo per core side by side (see
    Engine), so each detection gets one torch thread: two-threaded detections side by side
    oversubscribed the cores (README, "Design choices, measured")."""
    if embeds_on_onnx(settings.resolved_device(), settings.runtime):
        torch.set_num_threads(1)


@dataclass(frozen=True)
class Seen:
    """A photo as enrolment reads it: its faces, its thumbnail (photo evidence) and its size."""

    faces: list[Face]
    thumb: np.ndarray
    descriptor: Descriptor  # describe(thumb), made once: stored (projected) and searched with
    size: tuple[int, int]

    @classmethod
    def of(cls, faces: list[Face], image: Image.Image, size: tuple[int, int]) -> Seen:
        thumb = thumbnail(image)
        return cls(faces, thumb, describe(thumb), size)

    def photo_record(self, face: Face) -> PhotoRecord:
        """The photo evidence to store with `face`, one of this photo's faces."""
        return PhotoRecord(self.thumb, projected(self.descriptor[0]), fractions_of(face.box, self.size))


@dataclass(frozen=True)
class Identified(Generic[T, P]):
    """What /identify answers from: the faces (largest first), each face's search result, the
    photo's own size, and the photo-evidence search of the whole photo (None when not asked)."""

    faces: list[Face]
    found: T
    photo_size: tuple[int, int]
    photos: P | None


def largest(faces: list[Face], limit: int, source: str) -> list[Face]:
    """The `limit` largest faces, largest first (with a cap, the people in front are answered)."""
    if not faces:
        raise NoFaceFound(source, "no face found")
    return sorted(faces, key=lambda f: -f.area)[:limit]


class Overloaded(Exception):
    """Too much work queued, or a request ran past its time limit: come back shortly."""


class Engine:
    """Schedules and bounds the core's work for the service: decode, the face pipeline, the
    embedder. It holds loaded models; `from_settings` loads them."""

    def __init__(self, backbone: Backbone, pipeline: FacePipeline, embedder: Embedder, device: str, max_pixels: int,
                 detect_max_side: int = DECODE_MAX_SIDE, max_pending: int = 16, timeout_s: float = 30.0,
                 max_image_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.backbone = backbone
        self.device = device
        self.pipeline = pipeline
        self.embedder = embedder
        self.max_pixels, self.max_image_bytes = max_pixels, max_image_bytes
        self._large_decodes = threading.Semaphore(1)  # a decode's memory is bounded; so is how many run at once
        self.detect_max_side = detect_max_side
        self.max_pending, self.timeout_s = max_pending, timeout_s
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._cores = cpu_cores()
        self._detect_slots = threading.Semaphore(1 if device == "cuda" else self._cores)
        self._embed_lock = threading.Lock()
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self.on_batch = lambda size: None  # metrics hook

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        device = settings.resolved_device()
        backbone = load_backbone(settings.weights, device)
        return cls(backbone, load_pipeline(SERVICE_PIPELINE, device), make_embedder(backbone, device, settings.batch_size, settings.runtime),
                   device, settings.max_pixels, detect_max_side=settings.detect_max_side, max_pending=settings.max_pending,
                   timeout_s=settings.request_timeout_s, max_image_bytes=settings.max_image_bytes)

    @property
    def model_id(self) -> str:
        return self.backbone.model_id

    def default_threshold(self) -> float:
        """The model's evaluated FAR-1e-3 threshold (its card, or the pretrained table)."""
        return model_threshold(self.backbone.source)

    # -- blocking API: worker threads and the command line -------------------------------
    def decode(self, data: bytes, source: str) -> Decoded:
        return decode_reduced(data, source, self.max_pixels, self.detect_max_side, self.max_image_bytes, self._large_decodes)

    def detect_images(self, photos: Sequence[Decoded]) -> list[list[Face]]:
        """Every face of each photo, whole; same-sized photos share detection passes."""
        with self._detect_slots:
            return self.pipeline.faces(photos)

    def _alone(self) -> bool:
        """Whether at most one request is in the engine now."""
        with self._pending_lock:
            return self._pending <= 1

    def detect_blocking(self, data: bytes, source: str) -> list[Face]:
        return self.detect_images([self.decode(data, source)])[0]

    def see_blocking(self, data: bytes, source: str) -> Seen:
        """A photo's faces, with its thumbnail and size for photo evidence."""
        photo = self.decode(data, source)
        return Seen.of(self.detect_images([photo])[0], photo.image, photo.original_size)

    # -- bounded work ----------------------------------------------------------------------
    def saturation(self) -> str | None:
        """Why a new photo would be refused now, or None: read before its upload is."""
        with self._pending_lock:
            waiting = self._pending
        return f"{waiting} photos are already waiting for face detection; try again shortly" if waiting >= self.max_pending else None

    async def _bounded(self, source: str, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` in a worker thread if fewer than `max_pending` are waiting, within the time limit."""
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise Overloaded(f"{source}: {self._pending} photos are already waiting for face detection; try again shortly")
            self._pending += 1

        def work() -> T:
            try:
                return fn(*args)
            finally:  # released when the work ends, not when a timed-out client stops waiting
                with self._pending_lock:
                    self._pending -= 1

        try:
            return await asyncio.wait_for(run_in_threadpool(work), self.timeout_s)
        except TimeoutError as exc:
            raise Overloaded(f"{source}: the face work took longer than {self.timeout_s:g} s; try again shortly") from exc

    def embed_blocking(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """uint8 crops (N×3×160×160, or a list of 3×160×160) → N×512 unit embeddings."""
        if not isinstance(crops, torch.Tensor):
            if not crops:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            crops = torch.stack(list(crops))
        if self.device == "cpu" and not self._alone():  # side by side with other requests, a core each
            return self.embedder.embed(crops, one_core=True)
        with self._embed_lock:
            return self.embedder.embed(crops)

    # -- async API: the routes -------------------------------------------------------------
    async def detect(self, data: bytes, source: str) -> list[Face]:
        return await self._bounded(source, self.detect_blocking, data, source)

    async def see(self, data: bytes, source: str) -> Seen:
        return await self._bounded(source, self.see_blocking, data, source)

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

    async def identify(self, data: bytes, source: str, max_faces: int, search: Callable[[np.ndarray], T],
                       check: Callable[[], None], photos: Callable[[np.ndarray], P] | None = None) -> Identified[T, P]:
        """The faces of a photo (the largest `max_faces`), `search` of their embeddings, and, with
        `photos`, its search of the photo's thumbnail (photo evidence), after `check` (the gallery
        usable). No face is NoFaceFound unless photo evidence is asked for. On the CPU all of it is
        one worker-thread hop: the embedder batching across requests pays on a GPU, not for ONNX
        Runtime at batch 1, and each hop back to the event loop cost its own scheduling."""
        if self.device == "cpu":
            return await self._bounded(source, self._identify_blocking, data, source, max_faces, search, check, photos)
        await run_in_threadpool(check)
        photo = await self._bounded(source, self.decode, data, source)
        faces = self._largest(await self._bounded(source, self.detect_images, [photo]), max_faces, source, photos is not None)
        vectors = await self.embed([f.crop for f in faces])
        return Identified(faces, await run_in_threadpool(search, vectors), photo.original_size,
                          await run_in_threadpool(photos, thumbnail(photo.image)) if photos is not None else None)

    def _identify_blocking(self, data: bytes, source: str, max_faces: int, search: Callable[[np.ndarray], T],
                           check: Callable[[], None], photos: Callable[[np.ndarray], P] | None) -> Identified[T, P]:
        check()
        photo = self.decode(data, source)
        faces = self._largest(self.detect_images([photo]), max_faces, source, photos is not None)
        vectors = self.embed_blocking([f.crop for f in faces])
        return Identified(faces, search(vectors), photo.original_size, photos(thumbnail(photo.image)) if photos is not None else None)

    @staticmethod
    def _largest(found: list[list[Face]], limit: int, source: str, may_be_empty: bool) -> list[Face]:
        return largest(found[0], limit, source) if found[0] or not may_be_empty else []

    async def embed(self, crops: list[torch.Tensor]) -> np.ndarray:
        """Embeddings of `crops`, merged with other requests' crops into shared batches."""
        if not crops or self._queue is None:  # nothing to do, or not started: embed directly
            return await run_in_threadpool(self.embed_blocking, crops)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((torch.stack(crops), future))
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError as exc:
            raise Overloaded(f"embedding took longer than {self.timeout_s:g} s; try again shortly") from exc

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
