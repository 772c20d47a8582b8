"""Model work for the service and its bulk commands: decode, the face pipeline, the embedder,
scheduled and bounded. It knows nothing of the gallery; the use cases (app/usecases/) call it.

Every request runs its whole sequence (the gallery check, decode, detect, embed, search) in one
worker thread, on the CPU and on CUDA alike: each hop back to the event loop costs its own
scheduling. On the CPU a lone photo is detected here, on one torch thread and a helper thread
that runs half of MTCNN's nets on the second core meanwhile; photos side by side are detected
in worker processes, one per core (app/detector_pool.py: threads of one process queue for the
GIL). A lone request embeds on every core, requests side by side on one core each (a second
ONNX Runtime session), so no run waits on a core another is using (docs/design.md). On
CUDA, the crops of requests that arrive together are embedded in one forward pass by the
batching thread (up to `batch_size` faces), which is where a GPU gains most.

Work per request is bounded (`Admission`): at most `max_pending` photos are in the engine (then
503 with Retry-After, decided in app/http/guard.py before the upload is read), and a request's
face work past `timeout_s` answers 503 instead of holding its client. Photos are decoded at
most `detect_max_side` pixels on a side.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from app.detector_pool import DetectorPool
from core.constants import DECODE_MAX_SIDE, EMBEDDING_DIM
from core.device import cpu_cores
from core.embedding.embedder import Embedder
from core.faces.pipeline import Face
from core.images import DEFAULT_MAX_BYTES, Decoded, decode_reduced
from core.models.backbone import Backbone
from core.models.thresholds import model_threshold, verify_threshold
from core.photos.descriptor import thumbnail

T = TypeVar("T")
P = ParamSpec("P")


class Overloaded(Exception):
    """Too much work queued, or a request ran past its time limit: come back shortly."""


class FaceFinder(Protocol):
    """What the engine detects with (core's FacePipeline; tests may wrap it)."""

    def faces(self, photos: Sequence[Decoded], helper: Executor | None = None) -> list[list[Face]]: ...


@dataclass(frozen=True)
class Seen:
    """A photo as the use cases read it: its faces, its thumbnail (photo evidence; None when
    not asked for) and its own size."""

    faces: list[Face]
    thumb: np.ndarray | None
    size: tuple[int, int]


class Admission:
    """How much face work the engine takes: at most `max_pending` photos at once, each within
    `timeout_s`."""

    def __init__(self, max_pending: int = 16, timeout_s: float = 30.0) -> None:
        self.max_pending, self.timeout_s = max_pending, timeout_s
        self._pending = 0
        self._lock = threading.Lock()

    def saturation(self) -> str | None:
        """Why a new photo would be refused now, or None: read before its upload is."""
        with self._lock:
            waiting = self._pending
        return f"{waiting} photos are already waiting for face detection; try again shortly" if waiting >= self.max_pending else None

    def alone(self) -> bool:
        """Whether at most one photo is in the engine now."""
        with self._lock:
            return self._pending <= 1

    async def run(self, source: str, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work` in a worker thread if fewer than `max_pending` photos are in, within the time limit."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise Overloaded(f"{source}: {self._pending} photos are already waiting for face detection; try again shortly")
            self._pending += 1

        def counted() -> T:
            try:
                return work(*args, **kwargs)
            finally:  # released when the work ends, not when a timed-out client stops waiting
                with self._lock:
                    self._pending -= 1

        try:
            return await asyncio.wait_for(run_in_threadpool(counted), self.timeout_s)
        except TimeoutError as exc:
            raise Overloaded(f"{source}: the face work took longer than {self.timeout_s:g} s; try again shortly") from exc


class Batcher:
    """One thread that embeds the crops of requests arriving together in shared forward passes
    (up to `batch_size` faces): what a GPU needs to be busy."""

    def __init__(self, embed: Callable[[torch.Tensor], np.ndarray], batch_size: int, on_batch: Callable[[int], None]) -> None:
        self._embed, self.batch_size, self.on_batch = embed, batch_size, on_batch
        self._jobs: queue.Queue[tuple[torch.Tensor, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="faceid-embed-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Requests queued for the next pass."""
        return self._jobs.qsize()

    def embed(self, crops: torch.Tensor, timeout_s: float) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        self._jobs.put((crops, future))
        try:
            return future.result(timeout_s)
        except FutureTimeout as exc:
            raise Overloaded(f"embedding took longer than {timeout_s:g} s; try again shortly") from exc

    def _run(self) -> None:
        while (first := self._jobs.get()) is not None:
            jobs, size, stopping = [first], len(first[0]), False
            while size < self.batch_size and not self._jobs.empty():
                if (job := self._jobs.get_nowait()) is None:
                    stopping = True
                    break
                jobs.append(job)
                size += len(job[0])
            try:
                vectors = self._embed(torch.cat([crops for crops, _ in jobs]))
                self.on_batch(size)
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in jobs:
                    future.set_exception(exc)
            else:
                start = 0
                for crops, future in jobs:
                    future.set_result(vectors[start : start + len(crops)])
                    start += len(crops)
            if stopping:
                return


class Engine:
    """Holds the loaded models and schedules their work; `app.wiring.build_engine` loads them."""

    def __init__(self, backbone: Backbone, pipeline: FaceFinder, embedder: Embedder, device: str, max_pixels: int,
                 detect_max_side: int = DECODE_MAX_SIDE, admission: Admission | None = None,
                 max_image_bytes: int = DEFAULT_MAX_BYTES, detector_pool: DetectorPool | None = None) -> None:
        self.backbone = backbone
        self.device = device
        self.pipeline = pipeline
        self.embedder = embedder
        self.admission = admission if admission is not None else Admission()
        self.max_pixels, self.max_image_bytes, self.detect_max_side = max_pixels, max_image_bytes, detect_max_side
        self._large_decodes = threading.Semaphore(1)  # a decode's memory is bounded; so is how many run at once
        self._detect_slots = threading.Semaphore(1 if device == "cuda" else cpu_cores())
        # A lone photo's detection takes a second core for half of MTCNN's nets: on one torch
        # thread per detection (the serving process's), that is a thread of ours, not a second
        # OpenMP team (docs/design.md).
        spare_core = device == "cpu" and cpu_cores() > 1 and torch.get_num_threads() == 1
        self._detect_helper = ThreadPoolExecutor(1, thread_name_prefix="faceid-detect-helper") if spare_core else None
        self._embed_lock = threading.Lock()
        self.on_batch: Callable[[int], None] = lambda size: None  # metrics hook
        self._batcher: Batcher | None = None
        self.detector_pool = detector_pool

    @property
    def model_id(self) -> str:
        return self.backbone.model_id

    def default_threshold(self) -> float:
        """The model's evaluated FAR-1e-3 threshold (its card, or the pretrained table)."""
        return model_threshold(self.backbone.source)

    def default_pair_threshold(self) -> float:
        """The model's 1:1 (/verify) threshold (its card, or the pretrained table)."""
        return verify_threshold(self.backbone.source)

    def start(self) -> None:
        """On CUDA, start the batching thread (a serving process; the command line embeds directly)."""
        if self.device == "cuda":
            self._batcher = Batcher(self._embed_now, self.embedder.batch_size, lambda size: self.on_batch(size))
            self._batcher.start()

    def stop(self) -> None:
        if self._batcher is not None:
            self._batcher.stop()
            self._batcher = None
        if self.detector_pool is not None:
            self.detector_pool.close()
        if self._detect_helper is not None:
            self._detect_helper.shutdown(wait=True)
            self._detect_helper = None

    # -- blocking work: worker threads and the command line --------------------------------
    def decode(self, data: bytes, source: str) -> Decoded:
        return decode_reduced(data, source, self.max_pixels, self.detect_max_side, self.max_image_bytes, self._large_decodes)

    def detect(self, photos: Sequence[Decoded]) -> list[list[Face]]:
        """Every face of each photo, whole; same-sized photos share detection passes. Photos
        side by side go to the detection processes once they are ready (app/detector_pool.py)."""
        alone = self.admission.alone()
        if self.detector_pool is not None and not alone:
            try:
                faces = self.detector_pool.faces(photos)
            except BrokenProcessPool as exc:
                raise Overloaded("face detection stopped in a worker process; try again shortly") from exc
            if faces is not None:
                return faces
        with self._detect_slots:
            return self.pipeline.faces(photos, self._detect_helper if alone else None)

    def see(self, data: bytes, source: str, thumb: bool = True) -> Seen:
        """A photo's faces, its size, and (`thumb`) its thumbnail for photo evidence."""
        photo = self.decode(data, source)
        return Seen(self.detect([photo])[0], thumbnail(photo.image) if thumb else None, photo.original_size)

    def embed(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """uint8 crops (N×3×160×160, or a list of 3×160×160) → N×512 unit embeddings."""
        if not isinstance(crops, torch.Tensor):
            if not crops:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            crops = torch.stack(list(crops))
        if self._batcher is not None and self._batcher.running:
            return self._batcher.embed(crops, self.admission.timeout_s)
        self.on_batch(len(crops))
        if self.device == "cpu" and not self.admission.alone():  # side by side with other requests, a core each
            return self.embedder.embed(crops, one_core=True)
        return self._embed_now(crops)

    def _embed_now(self, crops: torch.Tensor) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.embed(crops)
