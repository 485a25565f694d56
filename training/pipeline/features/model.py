"""Models: a timm backbone, frozen, with a new head; saving one in timm's Hub layout; the seed's small CNN."""

from __future__ import annotations

import json
from pathlib import Path

import timm
from timm.models import save_for_hf
from torch import nn

from ...errors import UserError, hub_errors

# Every command's default (train, demo, study): the weights this machine has, mirrored to the local Hub by the demo;
# the design's ResNet50 (resnet50.tv_in1k) is one flag where its weights can be downloaded.
DEFAULT_BACKBONE = "hf-hub:timm/tf_efficientnet_lite0.in1k"


def build_model(backbone: str = DEFAULT_BACKBONE, num_classes: int = 2, pretrained: bool = True,
                freeze: bool = True, drop_rate: float = 0.0) -> nn.Module:
    """A timm model (any name or ``hf-hub:`` id) with a new ``num_classes`` head.

    Frozen means every parameter but the head's has ``requires_grad=False``; training then keeps the whole model
    in eval mode (features/extract.load_backbone) and trains the head apart from it, on cached features, so
    BatchNorm's statistics never move.
    """
    try:
        with hub_errors(f"loading backbone {backbone}"):
            model = timm.create_model(backbone, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UserError(f"unknown backbone {backbone!r}: not a timm model name or hf-hub: id "
                            "(see timm.list_models())") from None
        raise
    if freeze:
        head = set(head_parameters(model))
        for p in model.parameters():
            p.requires_grad_(id(p) in head)
    return model


def head_parameters(model: nn.Module) -> dict[int, nn.Parameter]:
    classifier = model.get_classifier()
    return {id(p): p for p in classifier.parameters()}


def small_cnn(in_chans: int = 3, num_classes: int = 2, size: int = 64) -> nn.Sequential:
    """The seed's CNN: Conv(32,3x3)+ReLU, MaxPool, Conv(64,3x3)+ReLU, MaxPool, Flatten, Dropout(0.5), Linear."""
    flat = 64 * (((size - 2) // 2 - 2) // 2) ** 2
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, num_classes),
    )


def data_config(model: nn.Module, crop_pct: float | None = None) -> dict:
    """Preprocessing from the model's ``pretrained_cfg`` (never hard-coded); ``crop_pct`` may override it."""
    return timm.data.resolve_data_config({"crop_pct": crop_pct} if crop_pct else {}, model=model)


def save_model(model, class_names: list[str], directory: Path, data_config: dict | None = None,
               extra_config: dict | None = None) -> Path:
    """``model.safetensors`` + ``config.json`` with label names, the preprocessing config and ``extra_config``
    (top-level keys timm and transformers ignore: the OOD method and threshold, the folded temperature).

    timm records ``num_classes`` inside ``model_args`` too; transformers' TimmWrapper then fails
    (``KeyError: 'num_classes'``), so it is kept only at the top level, where timm reads it anyway.
    """
    save_for_hf(model, str(directory), model_config={"label_names": list(class_names)}, safe_serialization=True,
                data_config=data_config)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    if not config.get("model_args"):
        config.pop("model_args", None)
    config.update(extra_config or {})
    config_path.write_text(json.dumps(config, indent=2))
    return directory


def set_cam_method(directory: Path, method: str) -> None:
    """Write the heatmap method the Space and ``training.predict`` use by default into the saved model's config."""
    config_path = Path(directory) / "config.json"
    config = json.loads(config_path.read_text())
    config["cam_method"] = method
    config_path.write_text(json.dumps(config, indent=2))
