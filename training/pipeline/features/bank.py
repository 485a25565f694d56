"""The frozen backbone's pooled features, computed once per image and view.

The train bank (N images x views x D floats: about 41 GB for 1 M images x 8 views of Lite0) is
written to disk as it is computed, one ``.npy`` file per view, and read back a batch of rows at a
time, so peak memory does not grow with the data. The small splits (holdout, validation, the OOD
set) are kept in memory with their mirror images.

Why a bank at all: the backbone is frozen, so an augmented pass costs one forward and the head then
needs many cheap steps; each pass is computed once instead of once per head epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ...errors import UserError

READ_CHUNK_ROWS = 2048  # rows per read when streaming the whole bank (mean/std, logits): 10 MB at D = 1280


class FeatureBank:
    """Pooled train features on disk, one file per view; row ``v * images + i`` is view v of image i."""

    def __init__(self, files: list[Path], labels: torch.Tensor):
        self.files, self.image_labels = list(files), labels
        self.images = len(labels)
        self.dim = int(np.load(self.files[0], mmap_mode="r").shape[1])

    def __len__(self) -> int:
        return len(self.files) * self.images

    @property
    def labels(self) -> torch.Tensor:
        return self.image_labels.repeat(len(self.files))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The features of the given rows, in that order, read from disk (only those rows are touched)."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = torch.empty(len(index), self.dim)
        view, image = index // self.images, index % self.images
        for v in view.unique().tolist():
            # A mapping per read, dropped at once: pages read stay in the page cache, not in this process.
            mapped = np.load(self.files[v], mmap_mode="r")
            where = (view == v).nonzero().squeeze(1)
            out[where] = torch.from_numpy(np.ascontiguousarray(mapped[image[where].numpy()], dtype=np.float32))
            del mapped
        return out

    def chunks(self, index: torch.Tensor, size: int = READ_CHUNK_ROWS) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, labels) for ``index`` in order, ``size`` rows at a time."""
        labels = self.labels
        for start in range(0, len(index), size):
            part = index[start:start + size]
            yield self.rows(part), labels[part]

    def mean_std(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and (unbiased) standard deviation over ``index``, streamed in float64."""
        total, squares = torch.zeros(self.dim, dtype=torch.float64), torch.zeros(self.dim, dtype=torch.float64)
        for features, _ in self.chunks(index):
            features = features.double()
            total += features.sum(0)
            squares += (features * features).sum(0)
        n = len(index)
        mean = total / n
        variance = (squares - n * mean * mean) / max(n - 1, 1)
        return mean.float(), variance.clamp_min(0).sqrt().float()


def save_bank(directory: Path, views: list[torch.Tensor], labels: torch.Tensor) -> FeatureBank:
    """A bank from in-memory views (each (N, D), row i = image i): for tests and benchmarks."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [directory / f"view_{i:03d}.npy" for i in range(len(views))]
    for file, view in zip(files, views, strict=True):
        np.save(file, view.float().numpy())
    return FeatureBank(files, labels)


class BankRows(torch.utils.data.Dataset):
    """Some rows of a bank as a map-style dataset that reads a whole batch at once (``__getitems__``)."""

    def __init__(self, bank: FeatureBank, index: torch.Tensor):
        self.bank, self.index, self.labels = bank, index, bank.labels[index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.as_tensor(indices, dtype=torch.long)
        return self.bank.rows(self.index[chosen]), self.labels[chosen]


ROW_MULTIPLE = 8  # a batch smaller than --batch_size splits evenly over 1, 2, 4 or 8 processes


def bank_loader(bank: FeatureBank, index: torch.Tensor, batch_size: int, seed: int = 0
                ) -> torch.utils.data.DataLoader:
    """Batches of (features, labels) over ``index``'s rows, shuffled across the whole bank.

    The order comes from the loader's own generator (``loader.generator``; reseed it per epoch), not
    from the global RNG, and the last partial batch is dropped (several processes would pad it with
    repeated rows), so a run gives the same head on 1 or N processes and after a resume. Fewer rows than
    ``batch_size`` (a small fold) make one batch of a multiple of ``ROW_MULTIPLE`` rows, for the same reason.
    """
    if len(index) < batch_size:
        batch_size = max(ROW_MULTIPLE, len(index) // ROW_MULTIPLE * ROW_MULTIPLE)
    return torch.utils.data.DataLoader(BankRows(bank, index), batch_size=batch_size, shuffle=True,
                                       collate_fn=_as_is, generator=torch.Generator().manual_seed(seed),
                                       drop_last=len(index) >= batch_size)


@dataclass
class SplitFeatures:
    """A small split's features kept in memory: ``pairs`` (2, N, D), each image and its mirror, and the labels."""

    pairs: torch.Tensor
    labels: torch.Tensor

    @property
    def plain(self) -> torch.Tensor:
        """(N, D): the images as evaluated, without their mirrors."""
        return self.pairs[0]

    def __len__(self) -> int:
        return len(self.labels)


def paired_features(backbone, loader, accelerator: Accelerator, desc: str, width: int | None = None
                    ) -> SplitFeatures:
    """A split through ``backbone`` with its mirror; an empty split (a small folder's holdout) gets ``width``."""
    pairs, labels = split_features(backbone, loader, accelerator, flip=True, desc=desc)
    if not len(labels) and width is not None:
        pairs = torch.empty(2, 0, width)
    return SplitFeatures(pairs, labels)


def _as_is(batch):
    return batch


def feature_passes(augmentation: str, augmented_views: int) -> int:
    """Backbone passes over train: the plain images (with their mirror), then the augmented views."""
    return 1 + (0 if augmentation == "none" else augmented_views)  # none: no randomness, one pass


@torch.inference_mode()
def split_features(backbone, loader, accelerator: Accelerator, flip: bool = False,
                   desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of a (small) split, gathered across processes: (N, D), or (2, N, D) with its mirror."""
    features, labels = [], []
    for pixels, batch_labels in _batches(backbone, loader, accelerator, flip, desc):
        features.append(pixels)
        labels.append(batch_labels)
    if not features:  # an empty split (a small folder's holdout): no rows, the width still unknown
        return torch.empty((2, 0, 0) if flip else (0, 0)), torch.empty(0, dtype=torch.long)
    stacked = torch.cat(features).transpose(0, 1)
    return (stacked if flip else stacked[0]).clone(), torch.cat(labels).clone()


def _batches(backbone, loader, accelerator: Accelerator, flip: bool, desc: str):
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
        pixels = batch["pixel_values"]
        out = [backbone(p) for p in ([pixels, pixels.flip(-1)] if flip else [pixels])]
        yield accelerator.gather_for_metrics(torch.stack(out, 1)), accelerator.gather_for_metrics(batch["labels"])


@torch.inference_mode()
def write_bank(backbone, loaders: tuple, accelerator: Accelerator, views: int, seed: int, directory: Path,
               resume: bool = False, dtype: str = "<f4") -> FeatureBank:
    """Train features to ``directory``: the images as evaluated (``loaders[0]``), their mirrors, then ``views - 1``
    augmented passes (``loaders[1]``). Each file is written as its batches come and renamed when complete, so
    ``resume`` skips it.
    ``dtype`` ``<f2``: fp16 rows (the prefix activations of tuning.py, twice the size of float32 otherwise)."""
    names = ["plain", "mirror"] + [f"augmented_{v:03d}" for v in range(1, views)]
    files = [directory / f"view_{i:03d}_{name}.npy" for i, name in enumerate(names)]
    labels_file = directory / "labels.npy"
    for view in range(views):
        targets = files[:2] if view == 0 else [files[view + 1]]
        if resume and all(f.is_file() for f in targets):
            continue
        set_seed(seed * 1000 + view)  # a view depends on (seed, view) only: resume is exact
        loader = loaders[0] if view == 0 else loaders[1]
        writers = [NpyRowWriter(f, len(loader.dataset), dtype) for f in targets] if accelerator.is_main_process else []
        collected = []
        for features, batch_labels in _batches(backbone, loader, accelerator, view == 0, f"view {view + 1}/{views}"):
            for i, writer in enumerate(writers):
                writer.append(features[:, i].float().numpy())
            collected.append(batch_labels)
        for writer in writers:
            writer.close()
        if accelerator.is_main_process and not labels_file.is_file():  # every view has the same order
            np.save(labels_file, torch.cat(collected).numpy())
        accelerator.wait_for_everyone()
    return FeatureBank(files, torch.from_numpy(np.load(labels_file)))


class NpyRowWriter:
    """Writes ``rows`` rows (float32, or ``dtype``) to ``<path>.tmp`` as they come; renamed to ``path`` when all
    are there."""

    def __init__(self, path: Path, rows: int, dtype: str = "<f4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp, self.expected, self.written = path, path.with_suffix(".tmp"), rows, 0
        self.dtype = dtype
        self.file = open(self.tmp, "wb")

    def append(self, rows: np.ndarray) -> None:
        if self.written == 0:  # the header needs the width, known with the first batch
            np.lib.format.write_array_header_1_0(self.file, {"descr": self.dtype, "fortran_order": False,
                                                             "shape": (self.expected, rows.shape[1])})
        self.written += len(rows)
        if self.dtype == "<f2" and not np.abs(rows).max(initial=0) <= np.finfo(np.float16).max:  # NaN fails too
            raise UserError(f"{self.path}: values beyond fp16's range in the cached activations; this backbone "
                            "cannot use --unfreeze_last_stages")
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.written != self.expected:
            raise RuntimeError(f"{self.path}: wrote {self.written} rows, expected {self.expected}")
        os.replace(self.tmp, self.path)
