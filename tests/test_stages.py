"""Unfreezing the last stage(s) on cached activations: the cut, what changes, what never does, auto's rule."""

from __future__ import annotations

import pytest
import timm
import torch
from accelerate import Accelerator

from training.errors import UserError
from training.pipeline.features.bank import save_bank
from training.pipeline.features.tuning import (
    Prefix,
    Suffix,
    Tuned,
    TuningRecipe,
    activation_shape,
    auto_choice,
    check_depth,
    load_suffix,
    prefix_extractor,
    tune_stages,
)
from training.pipeline.head.linear import StandardizedHead, fit_plain_head
from training.pipeline.recipe import HeadRecipe, StageRecipe

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


def _head(**overrides) -> HeadRecipe:
    return HeadRecipe(**{**dict(batch_size=16, learning_rate=1e-2, weight_decay=0.0), **overrides})


def _tuning(epochs: int = 2, precision: str = "no", requested: str = "1") -> TuningRecipe:
    return TuningRecipe(StageRecipe(requested, epochs=epochs, learning_rate=1e-3), _head(), precision)


def _tune(model, depth, tmp_path, epochs=2, holdout=True, seed=0, precision="no"):
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
    tuned = tune_stages(Suffix(model, depth, shape), probe, bank, torch.arange(len(bank)), held,
                        _tuning(epochs, precision), seed, tmp_path / "stages" / "tuned.safetensors")
    return shape, tuned


def test_a_feature_constant_on_train_cannot_swing_a_new_images_answer(tmp_path):
    """Tuned stages leave hundreds of pooled features (nearly) constant on train. Scaled by their own tiny spread,
    one that a new image moves gave a logit in the thousands (ECE 0.41 on the generated cells, BENCHMARKS.md)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    features = torch.randn(64, 16, generator=generator)
    features[:, 0] += 3 * labels  # the signal
    features[:, 1] = 0.5 + 1e-5 * labels  # nearly constant on train, and it too tells the classes apart
    bank = save_bank(tmp_path / "bank", [features], labels)
    head = fit_plain_head(torch.nn.Linear(16, 2), bank, torch.arange(64), Accelerator(cpu=True), _head(epochs=10),
                          seed=0)
    new = features[labels == 1].mean(0, keepdim=True)
    new[0, 1] = 0.49  # a new image moves the constant feature by a hundredth
    with torch.no_grad():
        logits = head(new)[0]
    assert logits.argmax() == 1 and (logits[1] - logits[0]).abs() < 20, logits


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


def test_tuning_learns_keeps_its_last_epoch_and_resumes_from_its_file(tmp_path):
    model = _model("test_efficientnet")
    _, tuned = _tune(model, 2, tmp_path, epochs=3)
    history = tuned.report["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and tuned.report["last"] == history[-1]
    assert history[-1]["holdout_loss"] < 1.0986  # log 3: chance
    saved = tmp_path / "stages" / "tuned.safetensors"
    assert saved.is_file() and not saved.with_suffix(".tmp").exists()
    _, again = _tune(model, 2, tmp_path, epochs=3, seed=99)  # a resumed run reads the finished tuning
    assert again.report == tuned.report and all(torch.equal(again.state[k], v) for k, v in tuned.state.items())


@pytest.mark.parametrize(("precision", "step_dtype"), [("bf16", torch.bfloat16), ("no", torch.float32)])
def test_the_runs_precision_reaches_the_tunings_accelerator_and_the_holdout_stays_fp32(precision, step_dtype,
                                                                                         tmp_path, monkeypatch):
    """--mixed_precision reaches accelerate: its autocast runs the tuning's steps; holdout figures are fp32."""
    seen = []
    forward = torch.nn.Conv2d.forward

    def recording(conv, x):
        out = forward(conv, x)
        seen.append((torch.is_grad_enabled(), out.dtype))
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recording)
    _tune(_model("test_efficientnet"), 1, tmp_path, epochs=1, precision=precision)
    steps = {dtype for grad, dtype in seen if grad}
    figures = {dtype for grad, dtype in seen if not grad}
    assert steps == {step_dtype} and figures == {torch.float32}


def test_fold_tuning_without_holdout_reports_only_its_epochs(tmp_path):
    _, tuned = _tune(_model("test_resnet"), 1, tmp_path, epochs=2, holdout=False)
    assert tuned.report["last"] == {"epoch": 1} and len(tuned.report["history"]) == 2


def _result(accuracy: float, auroc: float = 1.0, missed: int = 0) -> Tuned:
    return Tuned({}, {"last": {"holdout_accuracy": accuracy}, "ood_auroc": auroc, "ood_missed": missed})


@pytest.mark.parametrize(("frozen", "tuned", "predictions", "auroc", "missed", "chosen"), [
    (140, 140, 140, 1.0, 0, 0),  # the frozen head already answers all of it: nothing to gain
    (130, 131, 140, 1.0, 0, 0),  # one more right is noise
    (130, 132, 140, 1.0, 0, 1),  # two more (1.4 % of 140)
    (900, 909, 1000, 1.0, 0, 0),  # 0.9 % of a large holdout: below the 1 % asked for
    (900, 910, 1000, 1.0, 0, 1),
    (130, 120, 140, 1.0, 0, 0),  # worse
    (130, 135, 140, 0.996, 0, 1),  # other pictures told apart a little less well: within 0.005
    (130, 135, 140, 0.990, 0, 0),  # ... more than that: "neither" is part of what users get
    (130, 135, 140, 0.999, 1, 1),  # as many other pictures inside the "neither" limit as frozen (1)
    (130, 135, 140, 0.999, 2, 0),  # one more of them would be answered: the AUROC near 1 hides it
])
def test_auto_unfreezes_only_for_a_clear_gain_that_keeps_telling_other_pictures_apart(frozen, tuned, predictions,
                                                                                      auroc, missed, chosen):
    result = _result(tuned / predictions, auroc, missed)
    assert auto_choice(frozen, {1: result}, predictions, frozen_auroc=1.0, frozen_missed=1) == chosen


def test_every_fold_tuning_starts_from_the_frozen_weights_and_only_the_final_one_reaches_the_model(tmp_path):
    """The out-of-fold twins must start where the final tuning started; starting from the final tuning's weights
    (which saw every fold) made "neither" 12x too frequent on Alien vs. Predator."""
    import numpy as np
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from PIL import Image
    from safetensors.torch import load_file

    from training.pipeline.data.splits import make_loader
    from training.pipeline.features.bank import FeatureBank
    from training.pipeline.features.model import data_config
    from training.pipeline.features.tuned_banks import StageInputs, StageRun, fold_bank, stage_banks
    from training.pipeline.recipe import FeatureRecipe

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 80 + 120 * (i % 2)).astype(np.uint8)) for i in range(30)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    train = Dataset.from_dict({"image": images[:24], "label": [i % 2 for i in range(24)]}, features=features)
    holdout = Dataset.from_dict({"image": images[24:], "label": [i % 2 for i in range(6)]}, features=features)
    model = _model("test_efficientnet")
    model.reset_classifier(2)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier"))
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    config = data_config(model)
    accelerator = Accelerator(cpu=True)
    loaders = accelerator.prepare(*(make_loader(ds, "none", config, False, 8, shuffle=False)
                                    for ds in (train, train, holdout)))
    recipe = TuningRecipe(StageRecipe("1", epochs=2, learning_rate=1e-3), _head(seed=3, epochs=2))
    ood = torch.rand(5, *config["input_size"])
    out = stage_banks(model, config["input_size"], StageInputs(loaders, np.arange(24), ood), recipe,
                      FeatureRecipe(augmentation="none", augmented_views=0, seed=3), False, accelerator, tmp_path)
    assert 0 <= out.report["frozen"]["ood_auroc"] <= 1 and 0 <= out.report["tuned"]["ood_auroc"] <= 1
    assert all(0 <= out.report[m]["ood_missed"] <= len(ood) for m in ("frozen", "tuned"))
    assert out.report["chosen"] == 1 and out.report["fold_tunings"] >= 2 and len(out.fold_banks) >= 2

    shape = tuple(out.report["activation_shape"])
    prefix = FeatureBank(sorted((tmp_path / "prefix").glob("view_*.npy")), out.bank.image_labels)
    frozen_bank = FeatureBank(sorted((tmp_path / "pooled_frozen").glob("view_*.npy")), out.bank.image_labels)
    again = _model("test_efficientnet")
    again.reset_classifier(2)
    again.load_state_dict(pristine)
    fold_bank(StageRun(again, 1, shape, recipe, accelerator, tmp_path / "again"), 0, out.fold_of, prefix, frozen_bank)
    a, b = (load_file(d / "stages" / "depth_1_fold_0.safetensors") for d in (tmp_path, tmp_path / "again"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the run's fold 0 = fold 0 tuned from the frozen weights

    final = load_file(tmp_path / "stages" / "depth_1.safetensors")
    after = model.state_dict()
    assert all(torch.equal(after[f"blocks.4.{k.removeprefix('layers.0.')}"], v) for k, v in final.items()
               if k.startswith("layers.0."))
    assert all(torch.equal(after[k], pristine[k]) for k in pristine if not k.startswith(("blocks.4.", "conv_head.",
                                                                                         "bn2.", "classifier.")))


def test_activations_beyond_fp16_get_one_clear_error(tmp_path):
    import numpy as np

    from training.pipeline.features.bank import NpyRowWriter

    writer = NpyRowWriter(tmp_path / "view_000.npy", 2, "<f2")
    writer.append(np.ones((1, 4), np.float32))
    with pytest.raises(UserError, match="view_000.npy: values beyond fp16's range"):
        writer.append(np.full((1, 4), 1e6, np.float32))


def test_a_frozen_run_with_a_weak_holdout_suggests_auto_and_no_other_does():
    from training.pipeline.features.tuning import tuning_hint

    assert tuning_hint("0", 0.72) == ("holdout accuracy 0.720 with the backbone frozen: its features may not "
                                      "separate these images; try --unfreeze_last_stages auto")
    assert tuning_hint("0", 0.95) is None and tuning_hint("auto", 0.5) is None and tuning_hint("1", 0.5) is None


def test_the_fp16_cache_of_the_frozen_part_gives_the_backbones_features_on_real_photos():
    """The prefix bank is stored as fp16: its pooled features must match the fp32 backbone's (measured on all 200
    validation images: max |diff| 5.7e-4 at a feature scale of 0.24, cosine >= 0.999999)."""
    from PIL import Image

    from tests.conftest import DATA_DIR, WEIGHTS_DIR
    from training.pipeline.data.augment import build_transform
    from training.pipeline.features.model import build_model, data_config

    model = build_model(f"local-dir:{WEIGHTS_DIR / 'tf_efficientnet_lite0.in1k'}", 2).eval()
    config = data_config(model, crop_pct=1.0)
    transform = build_transform("none", config, train=False)
    paths = [DATA_DIR / "validation" / kind / f"{i}.jpg" for kind in ("alien", "predator") for i in range(8)]
    pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    shape = activation_shape(model, 1, config["input_size"])
    with torch.no_grad():
        direct = model.forward_head(model.forward_features(pixels), pre_logits=True)
        cached = Suffix(model, 1, shape)(prefix_extractor(model, 1, "no")(pixels).half().float())
    assert torch.nn.functional.cosine_similarity(direct, cached).min() > 0.9999
    assert (direct - cached).abs().max() < 5e-3
