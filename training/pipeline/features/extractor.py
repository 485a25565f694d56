"""The frozen backbone as a fast feature extractor: allocator, precision and ``torch.compile``.

Precision is as asked, or measured on the machine at hand (``auto``): a CPU flag does not say which
is faster (a CPU with avx512_bf16 but no AMX can run bf16 slower than fp32), so ``auto`` times both
and picks bf16 only when it clearly wins.

Compiling (inductor with ``freezing``: BatchNorm folded into the convolutions, weights prepacked for
oneDNN) costs seconds up front and saves milliseconds per image, so it pays only from a few
thousand images on (``compile_pays``). The figures behind both choices are in BENCHMARKS.md.
"""

from __future__ import annotations

import copy
import ctypes
import time
import warnings
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from torch import nn

from ...errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "no")
BF16_MUST_WIN_BY = 1.15  # fp32 is exact; bf16 has to earn its rounding
COMPILE_FROM_IMAGES = 3000  # compilation's seconds against the milliseconds it saves per image (BENCHMARKS.md)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS after every batch.

    A forward allocates activations of tens of MB; by default glibc serves those with mmap and gives
    them back on free, so every batch page-faults its activations in again (a large slowdown:
    BENCHMARKS.md). The cost: the process keeps its peak memory until it exits. Returns False where
    the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))


class PooledFeatures(nn.Module):
    """images -> the backbone's pooled (pre-logits) features, fp32; optionally compiled.

    A short last batch is padded to the first batch's size, so a compiled graph sees one shape
    (a new shape would mean a new compilation).
    """

    def __init__(self, backbone: nn.Module, compiled: bool = False):
        super().__init__()
        self.backbone = backbone
        self.dtype = next(backbone.parameters()).dtype
        self.compiled = compiled
        self.batch_size: int | None = None
        self.run = torch.compile(self.pooled, dynamic=False, options={"freezing": True}) if compiled else self.pooled

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(pixels), pre_logits=True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        count = len(pixels)
        self.batch_size = self.batch_size or count
        if self.compiled and count < self.batch_size:
            pixels = torch.cat([pixels, pixels.new_zeros(self.batch_size - count, *pixels.shape[1:])])
        pixels = pixels.to(self.dtype).contiguous(memory_format=torch.channels_last)
        try:
            return self.run(pixels)[:count].float()
        except Exception as error:  # e.g. no C++ compiler for inductor: eager gives the same features
            if not self.compiled:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); running eager",
                          stacklevel=2)
            self.compiled, self.run = False, self.pooled
            return self.run(pixels)[:count].float()


def half_dtype(precision: str) -> torch.dtype | None:
    """The 16-bit dtype of ``--mixed_precision`` bf16/fp16; None for fp32 ("no")."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def feature_extractor(model: nn.Module, precision: str, compiled: bool = False,
                      kind: type[PooledFeatures] = PooledFeatures) -> PooledFeatures:
    """The frozen backbone for feature extraction: a channels_last *copy* in ``precision``, run by ``kind``.

    A copy: for bf16/fp16, casting the weights once is faster than autocast re-casting them every
    batch (BENCHMARKS.md); and the model that gets saved keeps its fp32, contiguous weights (safetensors
    refuses channels_last tensors).
    """
    dtype = half_dtype(precision) or torch.float32
    backbone = copy.deepcopy(model).to(dtype).eval().to(memory_format=torch.channels_last)
    return kind(backbone, compiled)


@torch.inference_mode()
def image_features(extractor: PooledFeatures, images: list, transform, batch_size: int = 64) -> torch.Tensor:
    """(N, D) pooled features of PIL images, in batches of ``batch_size``."""
    features = [extractor(torch.stack([transform(image) for image in images[start:start + batch_size]]))
                for start in range(0, len(images), batch_size)]
    return torch.cat(features) if features else torch.empty(0)


def compile_pays(requested: str, images: int) -> bool:
    """``auto``: compile when the backbone will see at least ``COMPILE_FROM_IMAGES`` images."""
    if requested not in ("auto", "yes", "no"):
        raise UserError(f"--torch_compile must be auto, yes or no, got {requested!r}")
    return requested == "yes" or (requested == "auto" and images >= COMPILE_FROM_IMAGES)


@torch.inference_mode()
def forward_speed(extractor: PooledFeatures, input_size: tuple[int, int, int], batch_size: int = 16,
                  repeat: int = 2) -> float:
    """Images/s of the extractor on random pixels: best of ``repeat`` after one warm-up."""
    pixels = torch.randn(batch_size, *input_size)
    extractor(pixels)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        extractor(pixels)
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def probe_speeds(candidates: dict, input_size: tuple[int, int, int]) -> dict[str, float]:
    """Images/s of each candidate extractor, interleaved, best of three: this machine's speed drifts from second to
    second, so candidates timed one after the other would be compared across different moments."""
    speeds = dict.fromkeys(candidates, 0.0)
    for _ in range(3):
        for name, candidate in candidates.items():
            speeds[name] = round(max(speeds[name], forward_speed(candidate, input_size, repeat=1)), 1)
    return speeds


def main_process_choice(choice: list, accelerator: PartialState) -> list:
    """Every process gets the main process's choice (timed choices differ from process to process)."""
    if accelerator.num_processes > 1:
        broadcast_object_list(choice)
    return choice


def choose_precision(requested: str, model: nn.Module, input_size: tuple[int, int, int],
                     accelerator: PartialState) -> tuple[str, dict[str, float]]:
    """(precision, measured images/s per candidate); every process gets the main process's choice."""
    if requested not in PRECISIONS:
        raise UserError(f"--mixed_precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested, {}
    if accelerator.device.type == "cuda":
        return "bf16", {}
    if not cpu_has_bf16():
        return "no", {}
    speeds = probe_speeds({candidate: feature_extractor(model, candidate) for candidate in ("no", "bf16")},
                          input_size)
    choice = main_process_choice(["bf16" if speeds["bf16"] >= BF16_MUST_WIN_BY * speeds["no"] else "no", speeds],
                                 accelerator)
    return choice[0], choice[1]
