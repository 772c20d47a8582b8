"""OpenVINO's CPU runtime as the project runs it: fp32 where asked, a copy per caller, idle
threads once a call returns."""

import threading
import time

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import RNet

from core.faces.mtcnn_nets import OpenVinoNet
from core.openvino_cpu import CompiledCopies


def test_threads_stop_burning_cpu_once_a_call_returns():
    """Threads still spinning after a call would take the cores the next step needs (the same
    concern as ONNX Runtime's, core/embedding/onnx_runtime.py)."""
    net = OpenVinoNet(RNet(), 24)
    batch = torch.randn(40, 3, 24, 24)
    burnt = []
    for _ in range(3):
        net(batch, threads=2)
        start = time.process_time()
        time.sleep(0.1)
        burnt.append(time.process_time() - start)
    assert min(burnt) < 0.005, burnt


def test_callers_at_once_each_run_a_copy_of_their_own():
    copies = OpenVinoNet(RNet(), 24).copies
    inputs = [np.random.default_rng(k).standard_normal((8, 3, 24, 24)).astype(np.float32) for k in range(4)]
    expected = [copies.run(x) for x in inputs]
    start, got = threading.Barrier(4), {}

    def call(k: int) -> None:
        start.wait()
        got[k] = [copies.run(inputs[k]) for _ in range(20)]

    workers = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for k, answers in got.items():
        assert all(np.array_equal(a, e) for answer in answers for a, e in zip(answer, expected[k]))
    assert isinstance(copies, CompiledCopies) and copies.compiled()[1] >= 2  # they did not queue for one
