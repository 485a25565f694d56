"""Unfreezing the last stage(s) on cached activations: the cut, what changes, what never does, auto's rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import timm
import torch
from accelerate import Accelerator

from training.errors import UserError
from training.pipeline.features import save_bank
from training.pipeline.head import StandardizedHead
from training.pipeline.stages import (
    Prefix,
    Suffix,
    Tuned,
    activation_shape,
    auto_choice,
    check_depth,
    load_suffix,
    prefix_extractor,
    tune_stages,
)

SIZE = (3, 64, 64)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3).eval()
    with torch.no_grad():  # non-trivial running statistics, so "unchanged" means something
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet"])
@pytest.mark.parametrize("depth", [1, 2])
def test_prefix_then_suffix_is_the_backbone(name, depth):
    model = _model(name)
    pixels = torch.randn(4, *SIZE)
    shape = activation_shape(model, depth, SIZE)
    with torch.no_grad():
        whole = model.forward_head(model.forward_features(pixels), pre_logits=True)
        rows = prefix_extractor(model, depth, "no")(pixels)  # as the bank stores them: flattened
        assert rows.shape == (4, torch.Size(shape).numel())
        cut = Suffix(model, depth, shape)(rows)
    torch.testing.assert_close(cut, whole, atol=1e-5, rtol=1e-5)


def test_unsupported_backbones_and_depths_get_one_clear_error():
    with pytest.raises(UserError, match="EfficientNet and ResNet families; this backbone is a VisionTransformer"):
        check_depth(timm.create_model("test_vit", pretrained=False), 1)
    resnet = _model("test_resnet")
    check_depth(resnet, 3)
    with pytest.raises(UserError, match="has 4 stages; use 1 to 3"):
        check_depth(resnet, 4)


def _args(**overrides):
    values = dict(batch_size=16, learning_rate=1e-2, stage_learning_rate=1e-3, weight_decay=0.0, label_smoothing=0.0,
                  class_weight="none")
    return SimpleNamespace(**{**values, **overrides})


def _tune(model, depth, tmp_path, epochs=2, holdout=True, seed=0):
    shape = activation_shape(model, depth, SIZE)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(48, *SIZE, generator=generator)
    labels = torch.arange(48) % 3
    pixels += labels.view(-1, 1, 1, 1) * 0.5  # learnable
    with torch.no_grad():
        rows = Prefix(model, depth)(pixels).flatten(1)
    bank = save_bank(tmp_path / "bank", [rows[:40], rows[:40]], labels[:40])
    # The "holdout" here is a slice of train itself: the test checks that tuning fits, not that it generalises.
    held = save_bank(tmp_path / "holdout", [rows[:8], rows[:8]], labels[:8]) if holdout else None
    with torch.no_grad():
        pooled = Suffix(model, depth, shape)(rows[:40])
    probe = StandardizedHead(torch.nn.Linear(pooled.shape[1], 3), pooled.mean(0), pooled.std(0))
    tuned = tune_stages(model, depth, shape, probe, bank, torch.arange(len(bank)), held, epochs, Accelerator(cpu=True),
                        _args(), seed, tmp_path / "stages" / "tuned.safetensors")
    return shape, tuned


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet"])
def test_only_the_named_stages_change_and_batchnorm_statistics_never(name, tmp_path):
    model = _model(name)
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shape, tuned = _tune(model, 1, tmp_path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # tuning works on a copy
    load_suffix(model, 1, shape, tuned.state)
    after = model.state_dict()
    tuned_prefix = "blocks.4." if name == "test_efficientnet" else "layer4."
    tuned_names = ((tuned_prefix, "conv_head.", "bn2.") if name == "test_efficientnet" else (tuned_prefix,))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(tuned_names) for k in changed), sorted(changed)[:5]
    assert any(k.startswith(tuned_prefix) and k.endswith("weight") for k in changed)
    statistics = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and all(torch.equal(before[k], after[k]) for k in statistics)
    assert not any(p.requires_grad for p in model.parameters())  # frozen again for the head's pipeline


def test_tuning_learns_keeps_the_best_holdout_epoch_and_resumes_from_its_file(tmp_path):
    model = _model("test_efficientnet")
    _, tuned = _tune(model, 2, tmp_path, epochs=3)
    history = tuned.report["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    best = min(history, key=lambda h: h["holdout_loss"])
    assert tuned.report["best"]["holdout_loss"] == best["holdout_loss"]
    assert best["holdout_loss"] < 1.0986  # log 3: chance
    saved = tmp_path / "stages" / "tuned.safetensors"
    assert saved.is_file() and not saved.with_suffix(".tmp").exists()
    _, again = _tune(model, 2, tmp_path, epochs=3, seed=99)  # a resumed run reads the finished tuning
    assert again.report == tuned.report and all(torch.equal(again.state[k], v) for k, v in tuned.state.items())


def test_fold_tuning_without_holdout_keeps_its_last_epoch(tmp_path):
    _, tuned = _tune(_model("test_resnet"), 1, tmp_path, epochs=2, holdout=False)
    assert tuned.report["best"] == {"epoch": 1} and len(tuned.report["history"]) == 2


def _result(accuracy: float) -> Tuned:
    return Tuned({}, {"best": {"holdout_accuracy": accuracy}})


@pytest.mark.parametrize(("frozen", "tuned", "predictions", "chosen"), [
    (140, 140, 140, 0),  # the frozen head already answers all of it: nothing to gain
    (130, 131, 140, 0),  # one more right is noise
    (130, 132, 140, 1),  # two more (1.4 % of 140)
    (900, 909, 1000, 0),  # 0.9 % of a large holdout: below the 1 % asked for
    (900, 910, 1000, 1),
    (130, 120, 140, 0),  # worse
])
def test_auto_unfreezes_only_for_a_clear_gain_on_the_holdout(frozen, tuned, predictions, chosen):
    assert auto_choice(frozen, {1: _result(tuned / predictions)}, predictions) == chosen
