"""Which runtime runs the frozen backbone over the images: torch (fp32 or bf16) or ONNX Runtime (fp32).

The backbone never learns, so its passes are an inference problem. ``auto`` measures a short probe on
the machine at hand, as precision is chosen (extractor.py): which of torch fp32, torch bf16 and ONNX
Runtime is fastest differs from machine to machine (BENCHMARKS.md). fp32 is exact and ONNX Runtime's
features agree with torch's within 1e-4 (tested), so bf16 must beat the faster fp32 runtime by
``BF16_MUST_WIN_BY``. On a GPU, torch stays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import parse_flag_from_env
from torch import nn

from ...errors import UserError
from ..export.onnx_export import export_graph
from .extractor import (
    BF16_MUST_WIN_BY,
    choose_precision,
    cpu_has_bf16,
    feature_extractor,
    main_process_choice,
    probe_speeds,
)

RUNTIMES = ("auto", "torch", "onnxruntime")
BACKBONE_ONNX = "backbone.onnx"  # in the run's checkpoints: the probe's export, which the bank's session reuses


class OnnxPooledFeatures:
    """images -> the backbone's pooled features by ONNX Runtime, fp32: a drop-in for ``PooledFeatures``.

    The main process exports the frozen backbone once (to ``path``); every process then has its own
    session, with its share of the cores as intra-op threads.
    """

    compiled = False

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], path: Path, accelerator: PartialState,
                 export: bool = True):
        import onnxruntime as ort

        if accelerator.is_main_process and export:
            export_graph(model, input_size, path)  # the model repo's graph; only its "features" output is read
        accelerator.wait_for_everyone()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)) // accelerator.num_processes)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.threads = options.intra_op_num_threads

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(pixels.float().numpy())
        return torch.from_numpy(self.session.run(["features"], {"pixel_values": pixels})[0])


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime" and precision not in ("auto", "no"):
        raise UserError(f"--runtime onnxruntime runs fp32: use --mixed_precision no or auto, not {precision}")


def choose_runtime(runtime: str, precision: str, model: nn.Module, input_size: tuple[int, int, int],
                   accelerator: PartialState, onnx_path: Path) -> tuple[str, str, dict[str, float]]:
    """(runtime, precision, probe images/s per candidate); every process gets the main process's choice."""
    check_runtime(runtime, precision)
    if runtime == "torch" or accelerator.device.type == "cuda" or (runtime == "auto" and precision in ("bf16", "fp16")):
        return ("torch", *choose_precision(precision, model, input_size, accelerator))
    if runtime == "onnxruntime":
        return "onnxruntime", "no", {}
    candidates = {"torch fp32": feature_extractor(model, "no"),
                  "onnxruntime": OnnxPooledFeatures(model, input_size, onnx_path, accelerator)}
    if precision == "auto" and cpu_has_bf16():
        candidates["torch bf16"] = feature_extractor(model, "bf16")
    speeds = probe_speeds(candidates, input_size)
    best_fp32 = max(("torch fp32", "onnxruntime"), key=speeds.get)
    bf16 = speeds.get("torch bf16", 0.0) >= BF16_MUST_WIN_BY * speeds[best_fp32]
    choice = main_process_choice(["torch", "bf16", speeds] if bf16 else [best_fp32.split()[0], "no", speeds],
                                 accelerator)
    return choice[0], choice[1], choice[2]


def choose_runtime_once(runtime: str, precision: str, model: nn.Module, input_size: tuple[int, int, int],
                        state: PartialState, checkpoints: Path, resume: bool) -> tuple[str, str, dict[str, float]]:
    """``choose_runtime``, whose answer a resumed run reads back from ``checkpoints``: the probe is timed, so on a
    busy machine it can answer differently, and a bank must not mix features of two precisions."""
    saved = checkpoints / "runtime.json"
    if resume and saved.is_file():
        return tuple(json.loads(saved.read_text()))
    choice = choose_runtime(runtime, precision, model, input_size, state, checkpoints / BACKBONE_ONNX)
    if state.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(choice))
    return choice


def process_state() -> PartialState:
    """The processes' state before the run's Accelerator exists (its precision is measured first), set up as
    accelerate's own ``AcceleratorState`` does it: ``ACCELERATE_USE_CPU`` (``accelerate launch --cpu``) makes
    torchrun's processes one CPU group instead of one process each."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def run_accelerator(precision: str, **kwargs) -> Accelerator:
    """An ``Accelerator`` in the run's chosen ``precision`` ("no", "bf16" or "fp16"): the stage tuning's forward and
    backward autocast to it (fp16 only where accelerate supports it: not on a CPU).

    accelerate keeps one precision per process, so a process that trains again in another precision (the study,
    the tests) starts a new ``AcceleratorState``; the distributed state (torchrun's processes) is kept.
    """
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, **kwargs)


def backbone_extractor(runtime: str, precision: str, model: nn.Module, input_size: tuple[int, int, int],
                       accelerator: Accelerator, onnx_path: Path, compiled: bool = False):
    """The frozen backbone as a callable: pixels (N, 3, H, W) -> pooled features (N, D), fp32."""
    if runtime == "onnxruntime":  # the probe's export, if there was one (the run's checkpoints: a fresh run has none)
        return OnnxPooledFeatures(model, input_size, onnx_path, accelerator, export=not onnx_path.is_file())
    return feature_extractor(model, precision, compiled)
