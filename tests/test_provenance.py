"""Every model names its data: the validation split's fingerprint, and a gate that compares only like with like."""

from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

from training.pipeline.data.images import split_fingerprints
from training.pipeline.data.provenance import validation_fingerprint as fingerprint_of
from training.publishing.gate import comparison_table, other_split


def split(colours: list[tuple[int, int, int]], labels: list[int], format: str = "PNG") -> Dataset:
    import io

    def encoded(colour):
        data = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(data, format=format)
        return {"bytes": data.getvalue(), "path": None}

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    return Dataset.from_dict({"image": [encoded(c) for c in colours], "label": labels}, features=features)


def validation_fingerprint(validation: Dataset) -> str:
    return fingerprint_of(split_fingerprints(validation).exact, validation["label"])


def test_the_fingerprint_is_the_splits_pixels_and_labels_in_any_order():
    colours, labels = [(200, 0, 0), (0, 200, 0), (0, 0, 200)], [0, 1, 1]
    base = validation_fingerprint(split(colours, labels))
    assert validation_fingerprint(split(colours[::-1], labels[::-1])) == base  # row order
    assert validation_fingerprint(split(colours, labels, format="BMP")) == base  # the same pixels, another file
    assert validation_fingerprint(split(colours, [0, 1, 0])) != base  # one label changed
    assert validation_fingerprint(split([*colours[:2], (0, 0, 199)], labels)) != base  # one image changed


def test_the_gate_refuses_to_compare_figures_from_different_validation_splits():
    def run(fingerprint, revision):
        return {"data": {"dataset_id": "me/d", "dataset_revision": revision, "validation_fingerprint": fingerprint},
                "validation": {"accuracy": 0.9, "f1": 0.9}, "calibration": {"validation_after": {"ece": 0.01}}}

    main, same, other = run("aaaa", "1" * 40), run("aaaa", "2" * 40), run("bbbb", "3" * 40)
    assert other_split(main, same) is None  # another commit, the same split: comparable
    line = other_split(main, other)
    assert "another validation split" in line and "aaaa" in line and "bbbb" in line and "\n" not in line
    assert other_split({"validation": {"accuracy": 1}}, other) is None  # an older main recorded no split
    assert "not comparable" in comparison_table(main, other) and "not comparable" not in comparison_table(main, same)
