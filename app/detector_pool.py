"""Face detection in worker processes, for photos detected side by side on the CPU.

MTCNN is many small torch calls with Python between them, so detection threads in one process
queue for the GIL: two of them on two cores did about 1.3 photos' work at a time, where two
processes did two (docs/design.md). When more than one photo is in the engine, the photos'
images go to these processes, one per core, and come back as boxes (DetectedFace); the crops
and their quality are then cut here, by the same FacePipeline code, from the same pixels. A lone
photo is detected in the serving process, which spares it the trip.

The workers are forked from a server process that has imported torch once (multiprocessing's
forkserver), so they share its pages instead of each loading its own copy, and no process with
threads running is ever forked. They start the first time photos arrive together (a service
that never sees two at once never pays for them); until they are ready, photos are detected in
the serving process as before. A worker that dies (killed for memory, say) fails the photos it
held with `Overloaded` (503: try again); the next photos start fresh workers.

Like any multiprocessing code, a script that builds the service's engine itself must start
under `if __name__ == "__main__":`: the workers import the main module. Where they cannot start,
detection stays in the serving process, with one log line.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from PIL import Image

from core.faces.mtcnn_nets import NetsRuntime
from core.faces.pipeline import DetectedFace, Face, FacePipeline, PipelineConfig, load_pipeline
from core.images import Decoded

log = logging.getLogger("faceid")

_worker_pipeline: FacePipeline | None = None  # each worker process's own, loaded by _load


def _load(config: PipelineConfig, nets: NetsRuntime) -> None:
    """A worker's start: one torch thread and one BLAS thread (a core each), its nets loaded."""
    global _worker_pipeline
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    _worker_pipeline = load_pipeline(config, "cpu", nets)


def _detect(images: list[Image.Image]) -> list[list[DetectedFace]]:
    assert _worker_pipeline is not None, "the worker's initializer loads the pipeline"
    return _worker_pipeline.detect_batch(images)


class DetectorPool:
    """`workers` processes that detect as `pipeline` does (its configuration, the same nets
    from the models folder); `pipeline` cuts the crops from what they find."""

    def __init__(self, pipeline: FacePipeline, workers: int) -> None:
        self.pipeline, self.workers = pipeline, workers
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._ready = threading.Event()
        self._closed = False  # closed, or workers that could not start: no more tries

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def faces(self, photos: Sequence[Decoded]) -> list[list[Face]] | None:
        """Every face of each photo, detected in a worker; None while the workers are starting
        (the caller detects itself). Raises BrokenProcessPool when the worker died."""
        executor = self._executor if self._ready.is_set() else None
        if executor is None:
            self.start()
            return None
        try:
            found = executor.submit(_detect, [p.image for p in photos]).result()
        except BrokenProcessPool:
            self._discard(executor)
            raise
        return self.pipeline.faces_from(photos, found)

    def worker_pids(self) -> list[int]:
        """The worker processes now running (for operators and tests)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}  # the executor keeps them; it offers no public list
        return sorted(process.pid for process in processes.values() if process.pid is not None)

    def start(self) -> None:
        """Start the workers in the background, unless they are started or starting."""
        with self._lock:
            if self._executor is not None or self._closed:
                return
            context = multiprocessing.get_context("forkserver")  # no fork of a process with threads running
            context.set_forkserver_preload(["app.detector_pool", "openvino"])  # the workers share torch's and OpenVINO's pages
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_load,
                                                 initargs=(self.pipeline.config, self.pipeline.mtcnn.runtime))
        threading.Thread(target=self._warm, args=(self._executor,), name="faceid-detector-pool", daemon=True).start()

    def _warm(self, executor: ProcessPoolExecutor) -> None:
        """Ready once every worker has loaded its nets and detected once."""
        blank = Image.new("RGB", (64, 64))
        jobs: list[Future] = [executor.submit(_detect, [blank]) for _ in range(self.workers)]
        try:
            for job in jobs:
                job.result()
        except Exception:  # workers that cannot start: detection stays in the serving process, for good
            log.exception("detection worker processes did not start; detecting in the serving process")
            with self._lock:
                self._closed = True
            self._discard(executor, died=False)
            return
        with self._lock:
            if self._executor is executor:
                self._ready.set()
                log.info("detection worker processes ready: %d", self.workers)

    def _discard(self, executor: ProcessPoolExecutor, died: bool = True) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
                self._ready.clear()
                if died:
                    log.error("a detection worker process died; its photos answered 503, the next ones start new workers")
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            self._ready.clear()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
