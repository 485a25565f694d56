"""The augmentation variants: shapes, ranges, determinism."""

import pytest
import torch
from PIL import Image

from training.pipeline.data.augment import SMALL_CNN_CONFIG, VARIANTS, batch_transform, build_transform

LITE0_CONFIG = {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875,
                "interpolation": "bicubic"}


def _image():
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(150, 200, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", [LITE0_CONFIG, SMALL_CNN_CONFIG], ids=["lite0", "small_cnn"])
def test_shape_dtype_range(variant, config):
    out = build_transform(variant, config, train=True)(_image())
    size = config["input_size"][-1]
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    mean, std = config["mean"][0], config["std"][0]
    assert out.min() >= (0 - mean) / std - 1e-5 and out.max() <= (1 - mean) / std + 1e-5
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_output(variant):
    transform = build_transform(variant, LITE0_CONFIG, train=True)
    torch.manual_seed(3)
    first = transform(_image())
    torch.manual_seed(3)
    assert torch.equal(first, transform(_image()))


def test_augmentation_is_random_but_eval_is_not():
    train = build_transform("base", LITE0_CONFIG, train=True)
    assert not torch.equal(train(_image()), train(_image()))
    evaluation = build_transform("base", LITE0_CONFIG, train=False)
    assert torch.equal(evaluation(_image()), evaluation(_image()))


def test_grayscale_has_equal_channels_and_one_channel_option():
    out = build_transform("grayscale", LITE0_CONFIG, train=True)(_image())
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert build_transform("grayscale", SMALL_CNN_CONFIG, train=True, channels=1)(_image()).shape == (1, 64, 64)


def test_noise_is_added_only_in_training():
    torch.manual_seed(0)
    noisy = build_transform("noise", SMALL_CNN_CONFIG, train=True)
    base = build_transform("base", SMALL_CNN_CONFIG, train=True)
    torch.manual_seed(1)
    a = noisy(_image())
    torch.manual_seed(1)
    b = base(_image())
    assert 0.01 < (a - b).abs().mean() < 0.1  # sigma 0.05 on [0, 1] values, clipped


def test_set_transform_on_a_dataset(avp_dataset):
    dataset, _ = avp_dataset
    view = dataset["validation"].with_transform(batch_transform(build_transform("none", LITE0_CONFIG, train=False)))
    batch = view[:4]
    assert [t.shape for t in batch["pixel_values"]] == [(3, 224, 224)] * 4
    assert batch["label"] == dataset["validation"]["label"][:4]


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        build_transform("sepia", LITE0_CONFIG, train=True)


@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_evaluation_transform_equals_timms_on_every_mode_and_odd_sizes(crop_pct):
    """Training's evaluation transform and timm's (what the pipeline and the Space use) give the same tensor."""
    import numpy as np
    import timm

    from space.image_io import to_rgb
    from training.pipeline.data.augment import build_transform
    from training.pipeline.features.model import data_config

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2)
    config = data_config(model, crop_pct=crop_pct)
    ours = build_transform("none", config, train=False)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config(config, model=model))
    rng = np.random.default_rng(0)
    for size in ((17, 301), (640, 7), (225, 224), (1001, 999), (224, 224)):
        rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for mode in ("RGB", "L", "LA", "RGBA", "P", "CMYK", "1", "I", "I;16", "F"):
            image = to_rgb(rgb.convert(mode) if mode != "I;16" else rgb.convert("L").convert("I;16"))
            assert torch.equal(ours(image), theirs(image)), (mode, size, crop_pct)
