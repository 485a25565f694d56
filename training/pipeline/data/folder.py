"""An image folder -> a checked ``DatasetDict`` (Image + ClassLabel, ``file`` and ``leak`` columns) and a report.

Layouts: ``<data_dir>/{train,validation}/<class>/<image>``, or ``<data_dir>/<class>/<image>`` (also
``<data_dir>/train/<class>/<image>`` alone), which gets a seeded validation split, stratified by
class, with near-duplicate groups kept on one side so the split makes no leaks. Every file is
decoded by content and fully verified; the report lists formats, sizes, class balance, exact
duplicates (same decoded pixels) and near duplicates (perceptual hash within
``near_duplicate_threshold`` bits), inside train and between train and validation. Validation rows
that duplicate a training image get ``leak=True``. The command is ``training.dataset``.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from ...errors import UserError
from ..evaluate.metrics import imbalance
from .images import (
    NEAR_DUPLICATE_BITS,
    BadImageError,
    fingerprint,
    grouped_validation,
    is_hidden,
    near_pairs,
    read_image,
)

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class FolderRecipe:
    """How a folder becomes a dataset: the folder, the validation split made when it has none, the checks."""

    data_dir: str
    validation_fraction: float = 0.2
    seed: int = 42
    near_duplicate_threshold: int = NEAR_DUPLICATE_BITS  # max pHash Hamming distance (of 64 bits)
    skip_bad_files: bool = False


@dataclass
class Record:
    split: str
    label: str
    file: str  # relative to data_dir
    image_bytes: bytes
    format: str
    size: tuple[int, int]
    pixel_sha256: str
    phash: np.ndarray  # 64 booleans


def scan_folder(data_dir: Path) -> tuple[list[str], dict[str, list[Path]]]:
    """Class names and files per split (``{"all": ...}`` when the split is still to be made); raises
    UserError for a layout that can't be used."""
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such folder")
    subfolders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not is_hidden(p))
    if "validation" in subfolders and "train" not in subfolders:
        raise UserError(f"{data_dir}: has validation/ but no train/ folder")
    roots = ({s: data_dir / s for s in SPLITS} if "validation" in subfolders
             else {"all": data_dir / "train" if "train" in subfolders else data_dir})
    classes = {s: sorted(p.name for p in root.iterdir() if p.is_dir() and not is_hidden(p))
               for s, root in roots.items()}
    if "validation" in classes and classes["train"] != classes["validation"]:
        only_train = sorted(set(classes["train"]) - set(classes["validation"]))
        only_val = sorted(set(classes["validation"]) - set(classes["train"]))
        raise UserError(f"{data_dir}: class folders differ between splits: only in train {only_train}, "
                        f"only in validation {only_val}")
    names = next(iter(classes.values()))
    if len(names) < 2:
        raise UserError(f"{data_dir}: need at least two class folders (one per class), found {names}")
    files = {}
    for split, root in roots.items():
        files[split] = []
        for name in names:
            found = sorted((p for p in (root / name).iterdir() if p.is_file() and not is_hidden(p)), key=_natural)
            if not found:
                raise UserError(f"{root / name}: class folder is empty")
            files[split] += found
    return names, files


def _natural(path: Path) -> tuple:
    return (0, int(path.stem), path.name) if path.stem.isdigit() else (1, 0, path.name)


def load_record(path: Path, data_dir: Path) -> Record:
    image, fmt, data = read_image(path)
    with PILImage.open(io.BytesIO(data)) as original:
        upright_rgb = original.mode == "RGB" and original.getexif().get(0x0112, 1) == 1
    if not (fmt == "JPEG" and upright_rgb):  # store a lossless, upright RGB copy instead of the original
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    rel = path.relative_to(data_dir)
    pixel_sha256, phash = fingerprint(image)
    split = rel.parts[0] if rel.parts[0] in SPLITS and len(rel.parts) == 3 else "all"
    return Record(split=split, label=path.parent.name, file=rel.as_posix(), image_bytes=data, format=fmt,
                  size=image.size, pixel_sha256=pixel_sha256, phash=phash)


def make_validation_split(records: list[Record], fraction: float, seed: int, threshold: int) -> None:
    """Assign each record to train or validation (images.grouped_validation: per class, near duplicates whole)."""
    counts = Counter(r.label for r in records)
    single = [name for name in sorted(counts) if counts[name] < 2]
    if single:
        raise UserError(f"{len(single)} class(es) with 1 image: {', '.join(map(repr, single[:20]))}"
                        f"{' …' if len(single) > 20 else ''}; a validation split needs at least 2 images per class "
                        "(one to train on, one to measure): add images or remove those folders")
    chosen = grouped_validation([r.label for r in records], np.stack([r.phash for r in records]), fraction, seed,
                                threshold)
    for record, is_validation in zip(records, chosen.tolist(), strict=True):
        record.split = "validation" if is_validation else "train"


def find_duplicates(records: list[Record], threshold: int) -> dict:
    """Exact (same pixels) and near (pHash distance <= threshold) pairs, within train and train->validation."""
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "validation"]
    t_hash, v_hash = np.stack([r.phash for r in train]), np.stack([r.phash for r in val])

    def pairs(a: list[Record], ha: np.ndarray, b: list[Record], hb: np.ndarray, same: bool) -> tuple[list, list]:
        exact, near = [], []
        for i, j, distance in near_pairs(ha, hb, threshold, same=same):
            pair = [a[i].file, b[j].file]
            if a[i].pixel_sha256 == b[j].pixel_sha256:
                exact.append(pair)
            else:
                near.append(pair + [distance])
        return exact, near

    exact_train, near_train = pairs(train, t_hash, train, t_hash, same=True)
    exact_leaks, near_leaks = pairs(val, v_hash, train, t_hash, same=False)
    leaked = sorted({p[0] for p in exact_leaks + near_leaks}, key=lambda f: _natural(Path(f)))
    return {"near_duplicate_threshold": threshold, "method": "pHash (imagehash.phash, 64 bits), Hamming distance",
            "exact_duplicates_in_train": exact_train, "near_duplicates_in_train": near_train,
            "exact_leaks": exact_leaks, "near_leaks": near_leaks, "leaked_validation_files": leaked}


def build_dataset(recipe: FolderRecipe) -> tuple[DatasetDict, dict]:
    """Read, check and assemble the dataset; nothing leaves this function half-made."""
    data_dir = Path(recipe.data_dir)
    class_names, files = scan_folder(data_dir)
    records, bad = read_records(files, data_dir, recipe.skip_bad_files)
    made = "all" in files
    if made:
        present = {r.label for r in records}
        for name in class_names:
            if name not in present:
                raise UserError(f"{data_dir / name}: no usable image left in this class folder")
        make_validation_split(records, recipe.validation_fraction, recipe.seed, recipe.near_duplicate_threshold)
    present = {(r.split, r.label) for r in records}
    for split in SPLITS:
        for name in class_names:
            if (split, name) not in present:
                where = data_dir / name if made else data_dir / split / name
                raise UserError(f"{where}: no usable image left for {split} in this class folder")
    report = find_duplicates(records, recipe.near_duplicate_threshold)
    leaked = set(report["leaked_validation_files"])
    features = Features({"image": Image(), "label": ClassLabel(names=class_names), "file": Value("string"),
                         "leak": Value("bool")})
    splits = {}
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        splits[split] = Dataset.from_dict({
            "image": [{"bytes": r.image_bytes, "path": None} for r in rows],
            "label": [class_names.index(r.label) for r in rows],
            "file": [r.file for r in rows],
            "leak": [r.file in leaked for r in rows],
        }, features=features, split=split)
    report.update(folder_report(records, class_names, leaked, bad, recipe, made))
    report["imbalance"] = imbalance(report["counts"]["train"])
    return DatasetDict(splits), report


def read_records(files: dict[str, list[Path]], data_dir: Path, skip_bad_files: bool) -> tuple[list[Record], list[str]]:
    """Every file decoded by content: (the records, the files skipped and why)."""
    records, bad = [], []
    for split in files:
        for path in files[split]:
            try:
                records.append(load_record(path, data_dir))
            except BadImageError as e:
                if not skip_bad_files:
                    raise UserError(f"{e} (use --skip_bad_files to leave such files out)") from None
                bad.append(str(e))
    return records, bad


def folder_report(records: list[Record], class_names: list[str], leaked: set[str], bad: list[str],
                  recipe: FolderRecipe, made: bool) -> dict:
    """What the folder holds: counts, formats by content, misnamed files, sizes, the split and its leaks."""
    short_sides = [min(r.size) for r in records]
    counts = Counter((r.split, r.label) for r in records)
    return {
        "data_dir": str(recipe.data_dir), "class_names": class_names, "skipped_files": bad,
        "counts": {s: {c: counts[(s, c)] for c in class_names} for s in SPLITS},
        "formats_by_content": _count(f"{r.format}" for r in records),
        "misnamed_files": [f"{r.file} is {r.format}" for r in records
                           if r.format.lower() not in {Path(r.file).suffix.lower().lstrip("."), "jpeg"}
                           or (r.format == "JPEG" and Path(r.file).suffix.lower() not in (".jpg", ".jpeg"))],
        "image_size": {"min_short_side": min(short_sides), "max_short_side": max(short_sides),
                       "median_short_side": int(np.median(short_sides)),
                       "short_side_below_224": sum(s < 224 for s in short_sides), "total": len(records)},
        "leak_free_validation": sum(r.split == "validation" and r.file not in leaked for r in records),
        "validation_split": (f"made here: a seeded ({recipe.seed}), stratified {recipe.validation_fraction:.0%} of "
                             "each class, near-duplicate groups kept on one side" if made else "validation/ folder"),
    }


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def leak_summary(report: dict) -> str:
    exact = {p[0] for p in report["exact_leaks"]}
    near = set(report["leaked_validation_files"]) - exact
    return (f"{len(report['leaked_validation_files'])} validation images duplicate a training image "
            f"({len(exact)} exact, {len(near)} near); {report['leak_free_validation']} leak-free validation images; "
            f"{len(report['exact_duplicates_in_train'])} exact and {len(report['near_duplicates_in_train'])} near "
            f"duplicate pairs inside train")
