"""Where MTCNN's three nets (facenet-pytorch's trained PNet, RNet and ONet) run: torch on any
device, or OpenVINO's CPU runtime.

On the CPU these nets are many small convolutions, PReLUs and poolings, where torch's per-call
cost weighs. OpenVINO runs each faster in fp32, and a call holds the GIL for none of its work,
which is where most of the gain over HTTP comes from (docs/benchmarks.md, seventh round). A
shape it has not seen before costs more the first time. Its outputs agree with torch's to float
rounding, so the boxes are the reference cascade's (tests/test_mtcnn.py). Its precision is
pinned to fp32: on a CPU with AMX or AVX-512 BF16 it would otherwise pick bf16 and move the
boxes.

The two spread a lone photo over a second core differently. Torch's nets (one thread in a
serving process) take a helper thread that runs half the work (`Mtcnn.detect`); an OpenVINO
call uses as many threads as it is given, so the helper becomes a second thread inside each
call. Each thread detecting at once runs a compiled copy of its own (core/openvino_cpu.py).
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal, Protocol

import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from torch import nn

from core.openvino_cpu import CompiledCopies, openvino

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
    """A net converted to OpenVINO once, compiled for the CPU in fp32 per thread count
    (core/openvino_cpu.py)."""

    def __init__(self, module: nn.Module, side: int) -> None:
        ov = openvino()
        with warnings.catch_warnings():  # tracing warns about facenet-pytorch's shape arithmetic
            warnings.simplefilter("ignore")
            model = ov.convert_model(module.eval(), example_input=torch.zeros(1, 3, side, side),
                                     input=[ov.PartialShape([-1, 3, -1, -1])])
        self.copies = CompiledCopies(model, "f32")  # never bf16: the boxes are the reference's

    def __call__(self, batch: torch.Tensor, threads: int = 1) -> list[torch.Tensor]:
        return [torch.from_numpy(output) for output in self.copies.run(batch.numpy(), threads)]
