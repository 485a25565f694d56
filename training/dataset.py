"""Image folder -> checked ``DatasetDict`` (Image + ClassLabel) -> the Hub, with a report and a card.

    python -m training.dataset --data_dir ../shared/data/alien-vs-predator --push_to_hub demo/alien-vs-predator

Layout: ``<data_dir>/{train,validation}/<class>/<image>``. Every file is decoded by content and
fully verified; the report lists formats, sizes, exact duplicates (same decoded pixels) and near
duplicates (perceptual hash within ``near_duplicate_threshold`` bits), inside train and between
train and validation. Validation rows that duplicate a training image get ``leak=True``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from .errors import UserError
from .images import NEAR_DUPLICATE_BITS, BadImageError, fingerprint, is_hidden, read_image

SPLITS = ("train", "validation")


@dataclass
class DatasetArguments:
    data_dir: str = field(metadata={"help": "folder with train/ and validation/, one subfolder per class"})
    push_to_hub: str | None = field(default=None, metadata={"help": "dataset repo id to push to"})
    private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    skip_bad_files: bool = field(default=False, metadata={"help": "leave out unreadable files (listed in the report)"})
    output_dir: str = field(default="outputs/dataset", metadata={"help": "where report.json and the grid go"})
    near_duplicate_threshold: int = field(default=NEAR_DUPLICATE_BITS,
                                          metadata={"help": "max pHash Hamming distance (of 64 bits)"})


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
    """Class names and files per split; raises UserError for a layout that can't be used."""
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such folder")
    missing = [s for s in SPLITS if not (data_dir / s).is_dir()]
    if missing:
        raise UserError(f"{data_dir}: missing split folder(s) {', '.join(missing)} (expected {' and '.join(SPLITS)})")
    classes = {s: sorted(p.name for p in (data_dir / s).iterdir() if p.is_dir() and not is_hidden(p)) for s in SPLITS}
    if classes["train"] != classes["validation"]:
        only_train = sorted(set(classes["train"]) - set(classes["validation"]))
        only_val = sorted(set(classes["validation"]) - set(classes["train"]))
        raise UserError(f"{data_dir}: class folders differ between splits: only in train {only_train}, "
                        f"only in validation {only_val}")
    if len(classes["train"]) < 2:
        raise UserError(f"{data_dir}: need at least two class folders, found {classes['train']}")
    files = {}
    for split in SPLITS:
        files[split] = []
        for name in classes[split]:
            found = sorted((p for p in (data_dir / split / name).iterdir() if p.is_file() and not is_hidden(p)),
                           key=_natural)
            if not found:
                raise UserError(f"{data_dir / split / name}: class folder is empty")
            files[split] += found
    return classes["train"], files


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
    return Record(split=rel.parts[0], label=rel.parts[1], file=rel.as_posix(), image_bytes=data, format=fmt,
                  size=image.size, pixel_sha256=pixel_sha256, phash=phash)


def find_duplicates(records: list[Record], threshold: int) -> dict:
    """Exact (same pixels) and near (pHash distance <= threshold) pairs, within train and train->validation."""
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "validation"]
    t_hash, v_hash = np.stack([r.phash for r in train]), np.stack([r.phash for r in val])

    def pairs(a: list[Record], ha: np.ndarray, b: list[Record], hb: np.ndarray, same: bool) -> tuple[list, list]:
        distance = (ha[:, None, :] != hb[None, :, :]).sum(-1)
        exact, near = [], []
        for i, j in zip(*np.nonzero(distance <= threshold), strict=True):
            if same and j <= i:
                continue
            pair = [a[i].file, b[j].file]
            if a[i].pixel_sha256 == b[j].pixel_sha256:
                exact.append(pair)
            else:
                near.append(pair + [int(distance[i, j])])
        return exact, near

    exact_train, near_train = pairs(train, t_hash, train, t_hash, same=True)
    exact_leaks, near_leaks = pairs(val, v_hash, train, t_hash, same=False)
    leaked = sorted({p[0] for p in exact_leaks + near_leaks}, key=lambda f: _natural(Path(f)))
    return {"near_duplicate_threshold": threshold, "method": "pHash (imagehash.phash, 64 bits), Hamming distance",
            "exact_duplicates_in_train": exact_train, "near_duplicates_in_train": near_train,
            "exact_leaks": exact_leaks, "near_leaks": near_leaks, "leaked_validation_files": leaked}


def build_dataset(args: DatasetArguments) -> tuple[DatasetDict, dict]:
    """Read, check and assemble the dataset; nothing leaves this function half-made."""
    data_dir = Path(args.data_dir)
    class_names, files = scan_folder(data_dir)
    records, bad = [], []
    for split in SPLITS:
        for path in files[split]:
            try:
                records.append(load_record(path, data_dir))
            except BadImageError as e:
                if not args.skip_bad_files:
                    raise UserError(f"{e} (use --skip_bad_files to leave such files out)") from None
                bad.append(str(e))
    for split in SPLITS:
        for name in class_names:
            if not any(r.split == split and r.label == name for r in records):
                raise UserError(f"{data_dir / split / name}: no usable image left in this class folder")
    report = find_duplicates(records, args.near_duplicate_threshold)
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
    short_sides = [min(r.size) for r in records]
    report.update({
        "data_dir": str(data_dir), "class_names": class_names, "skipped_files": bad,
        "counts": {s: {c: sum(r.split == s and r.label == c for r in records) for c in class_names} for s in SPLITS},
        "formats_by_content": _count(f"{r.format}" for r in records),
        "misnamed_files": [f"{r.file} is {r.format}" for r in records
                           if r.format.lower() not in {Path(r.file).suffix.lower().lstrip("."), "jpeg"}
                           or (r.format == "JPEG" and Path(r.file).suffix.lower() not in (".jpg", ".jpeg"))],
        "image_size": {"min_short_side": min(short_sides), "max_short_side": max(short_sides),
                       "median_short_side": int(np.median(short_sides)),
                       "short_side_below_224": sum(s < 224 for s in short_sides), "total": len(records)},
        "leak_free_validation": sum(r.split == "validation" and r.file not in leaked for r in records),
    })
    return DatasetDict(splits), report


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


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(DatasetArguments).parse_args_into_dataclasses()
    dataset, report = build_dataset(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(f"built {', '.join(f'{s}: {len(d)}' for s, d in dataset.items())}; report: {output_dir / 'report.json'}")
    print(leak_summary(report))
    if args.push_to_hub:
        from .publish_dataset import push_dataset

        url = push_dataset(dataset, report, args.push_to_hub, output_dir, private=args.private)
        print(f"pushed dataset {args.push_to_hub}: {url}")


if __name__ == "__main__":
    from .errors import run_cli

    run_cli(main)
