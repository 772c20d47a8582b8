"""Detection in worker processes (app/detector_pool.py): photos side by side are detected there
and give the faces the serving process would find; a worker that dies costs its photo a 503 and
the next photos get fresh workers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor

import numpy as np
import pytest
import torch

from app.detector_pool import DetectorPool
from app.engine import Admission, Engine, Overloaded
from core.device import cpu_cores
from core.faces.pipeline import Face, FacePipeline
from core.images import Decoded, load_image
from tests.conftest import GROUP, PORTRAIT


class Counted:
    """The engine's own detection, counted: how many photos it detected in this process."""

    def __init__(self, inner: FacePipeline) -> None:
        self.inner, self.photos = inner, 0
        self.helpers: list[Executor | None] = []  # what each call was given

    def faces(self, photos: Sequence[Decoded], helper: Executor | None = None) -> list[list[Face]]:
        self.photos += len(photos)
        self.helpers.append(helper)
        return self.inner.faces(photos, helper)


def ready(pool: DetectorPool, seconds: float = 120) -> DetectorPool:
    pool.start()
    deadline = time.monotonic() + seconds
    while not pool.ready:
        assert time.monotonic() < deadline, "the detection workers did not start"
        time.sleep(0.05)
    return pool


@pytest.fixture(scope="module")
def pool(pipeline: FacePipeline) -> Iterator[DetectorPool]:
    started = DetectorPool(pipeline, 1)
    yield ready(started)
    started.close()


@pytest.fixture(scope="module")
def photos() -> list[Decoded]:
    blank = Decoded.whole(load_image(PORTRAIT).point(lambda v: 0))
    return [Decoded.whole(load_image(GROUP)), Decoded.whole(load_image(PORTRAIT)), blank]


def described(faces: list[list[Face]]) -> list[list[tuple]]:
    return [[(np.round(f.box, 3).tolist(), f.score, f.path, f.quality, f.crop.numpy().tobytes()) for f in found] for found in faces]


def test_the_workers_find_the_faces_and_cut_the_crops_the_serving_process_would(pipeline, pool, photos):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run: the same kernels, the same sums
    try:
        here = pipeline.faces(photos)
    finally:
        torch.set_num_threads(threads)
    there = pool.faces(photos)
    assert there is not None
    assert [len(found) for found in there] == [len(found) for found in here]
    assert len(there[0]) >= 6 and len(there[1]) == 1 and there[2] == []
    assert described(there) == described(here)


def side_by_side(engine: Engine, photos: list[Decoded]) -> list[list[Face]]:
    """`engine.detect(photos)` while another photo is in the engine: held in the admission."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    other = threading.Thread(target=lambda: asyncio.run(engine.admission.run("held", hold)))
    other.start()
    try:
        assert held.wait(10)
        return asyncio.run(engine.admission.run("photo", engine.detect, photos))
    finally:
        release.set()
        other.join(30)


def test_the_engine_detects_a_lone_photo_itself_and_photos_side_by_side_in_the_workers(pipeline, pool, photos):
    counted = Counted(pipeline)
    engine = Engine(None, counted, None, "cpu", 10_000_000, admission=Admission(4, 60), detector_pool=pool)  # type: ignore[arg-type]
    lone = asyncio.run(engine.admission.run("photo", engine.detect, photos[1:2]))
    assert counted.photos == 1 and len(lone[0]) == 1
    beside = side_by_side(engine, photos[1:2])
    assert counted.photos == 1, "a photo beside another went to the workers"
    assert described(beside) == described(pool.faces(photos[1:2]))  # type: ignore[arg-type]


def test_a_lone_photo_takes_the_second_core_for_half_of_its_detection_and_a_photo_beside_another_does_not(pipeline, photos):
    if cpu_cores() < 2:
        pytest.skip("one core: nothing to share the work with")
    counted = Counted(pipeline)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a serving process runs (app.wiring.set_serving_threads)
    try:
        engine = Engine(None, counted, None, "cpu", 10_000_000, admission=Admission(4, 60))  # type: ignore[arg-type]
        lone = asyncio.run(engine.admission.run("photo", engine.detect, photos[:2]))
        beside = side_by_side(engine, photos[:2])
        engine.stop()
    finally:
        torch.set_num_threads(threads)
    assert counted.helpers[0] is not None and counted.helpers[1] is None
    assert [len(found) for found in lone] == [len(found) for found in beside]
    for a, b in zip(lone, beside):
        for x, y in zip(a, b):
            assert np.allclose(x.box, y.box, atol=1e-3) and x.path == y.path
    assert engine._detect_helper is None  # stopped with the engine


def test_a_worker_killed_answers_its_photo_overloaded_and_fresh_workers_take_the_next(pipeline, photos):
    counted = Counted(pipeline)
    own = ready(DetectorPool(pipeline, 1))
    engine = Engine(None, counted, None, "cpu", 10_000_000, admission=Admission(4, 60), detector_pool=own)  # type: ignore[arg-type]
    try:
        for pid in own.worker_pids():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(Overloaded, match="worker process"):
            side_by_side(engine, photos[1:2])
        assert not own.ready
        assert len(side_by_side(engine, photos[1:2])[0]) == 1  # detected here while new workers start
        assert counted.photos == 1
        ready(own)
        assert len(side_by_side(engine, photos[1:2])[0]) == 1
        assert counted.photos == 1
    finally:
        engine.stop()
    assert own.worker_pids() == [] and not own.ready
