"""Where MTCNN's three nets (facenet-pytorch's trained PNet, RNet and ONet) run: torch on any
device, or OpenVINO's CPU runtime.

On the CPU these nets are many small convolutions, PReLUs and poolings, where torch's per-call
cost weighs; OpenVINO runs them in fp32 in roughly half torch's time (docs/benchmarks.md). Its
outputs agree with torch's to float rounding, so the boxes are the reference cascade's
(tests/test_mtcnn.py). Its precision is pinned to fp32: on a CPU with AMX or AVX-512 BF16 it
would otherwise pick bf16 and move the boxes.

The two spread a lone photo over a second core differently. Torch's nets (one thread in a
serving process) take a helper thread that runs half the work (`Mtcnn.detect`); an OpenVINO
call uses as many threads as it is given, so the helper becomes a second thread inside each
call. A compiled model runs one call at a time, so each thread detecting at once gets its own
copy (`_Compiled`): photos detected side by side in one process do not queue for one copy.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Literal, Protocol

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from torch import nn

log = logging.getLogger(__name__)

NetsRuntime = Literal["auto", "openvino", "torch"]  # auto: OpenVINO on the CPU when installed, else torch


class Net(Protocol):
    def __call__(self, batch: torch.Tensor, threads: int = 1) -> list[torch.Tensor]:
        """N×3×H×W standardised input, the threads this call may use → the net's outputs."""
        ...

SIDES = (12, 24, 48)  # the input side each net was trained on (PNet's window, RNet's and ONet's crops)


def load_nets(device: torch.device, runtime: NetsRuntime = "auto") -> tuple[Net, Net, Net, bool]:
    """PNet, RNet and ONet on `runtime`, and whether a call spreads over its threads by itself
    (OpenVINO) rather than through a helper thread (torch). OpenVINO runs on the CPU only; where
    it is asked for and cannot load, torch runs the nets and one log line says why."""
    modules = (PNet(), RNet(), ONet())
    if runtime not in ("auto", "openvino", "torch"):
        raise ValueError(f"unknown detection runtime {runtime!r}; choose auto, openvino or torch")
    if runtime == "openvino" and device.type != "cpu":
        raise ValueError("the openvino detection runtime runs on the CPU; use torch on CUDA")
    if runtime != "torch" and device.type == "cpu":
        try:
            pnet, rnet, onet = (OpenVinoNet(module, side) for module, side in zip(modules, SIDES))
            return pnet, rnet, onet, True
        except ImportError:
            if runtime == "openvino":
                raise
        except Exception:  # a CPU or build the runtime refuses: torch detects as before
            log.exception("MTCNN's nets could not load on OpenVINO; detecting with torch")
    torch_nets = tuple(TorchNet(module, device) for module in modules)
    return torch_nets[0], torch_nets[1], torch_nets[2], False


class TorchNet:
    """A net in eager torch, on its device; its threads are torch's own setting."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module, self.device = module.to(device).eval(), device

    def __call__(self, batch: torch.Tensor, threads: int = 1) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [t.float() for t in self.module(batch.to(self.device))]


class OpenVinoNet:
    """A net converted to OpenVINO once, compiled for the CPU per thread count on first use."""

    def __init__(self, module: nn.Module, side: int) -> None:
        import openvino as ov

        self._ov = ov
        with warnings.catch_warnings():  # tracing warns about facenet-pytorch's shape arithmetic
            warnings.simplefilter("ignore")
            self.model = ov.convert_model(module.eval(), example_input=torch.zeros(1, 3, side, side),
                                          input=[ov.PartialShape([-1, 3, -1, -1])])
        self._free: dict[int, list[_Compiled]] = {}
        self._lock = threading.Lock()
        self._release(self._compile(1))  # fail here, at load, rather than on the first photo

    def __call__(self, batch: torch.Tensor, threads: int = 1) -> list[torch.Tensor]:
        compiled = self._acquire(threads)
        try:
            return compiled.run(batch.numpy())
        finally:
            self._release(compiled)

    def _acquire(self, threads: int) -> _Compiled:
        with self._lock:
            free = self._free.get(threads)
            if free:
                return free.pop()
        return self._compile(threads)

    def _release(self, compiled: _Compiled) -> None:
        with self._lock:
            self._free.setdefault(compiled.threads, []).append(compiled)

    def _compile(self, threads: int) -> _Compiled:
        config = {
            "INFERENCE_PRECISION_HINT": "f32",  # never bf16: the boxes are the reference's
            "NUM_STREAMS": 1,  # the calling thread runs the call (with `threads` - 1 of OpenVINO's)
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,  # detection processes side by side would pin to the same cores
        }
        return _Compiled(self._ov.Core().compile_model(self.model, "CPU", config), threads)


class _Compiled:
    """One compiled copy of a net and its request: one call at a time."""

    def __init__(self, compiled: Any, threads: int) -> None:
        self.threads, self.outputs = threads, compiled.outputs
        self.request = compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> list[torch.Tensor]:
        results = self.request.infer({0: batch})  # copies of the outputs (share_outputs=False): the next call reuses its buffers
        return [torch.from_numpy(results[output]) for output in self.outputs]
