"""Frozen means frozen; shapes and finiteness; the seed's small CNN."""

import pytest
import torch
import torch.nn.functional as F

from training.errors import UserError
from training.pipeline.features.model import build_model, small_cnn


@pytest.mark.parametrize("backbone", ["resnet50", "tf_efficientnet_lite0"])
def test_frozen_backbone_does_not_move(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=2, pretrained=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("fc.", "classifier.")) for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()  # as training loads it (features/extract.load_backbone)
    assert not any(m.training for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 96, 96)
    logits = model(x)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    optimizer.step()
    after = model.state_dict()
    head = {k for k in after if k.startswith(("fc.", "classifier."))}
    assert all(torch.equal(before[k], after[k]) for k in after if k not in head)  # weights and BN running stats
    assert any(not torch.equal(before[k], after[k]) for k in head)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(UserError, match="unknown backbone 'resnet5000'"):
        build_model("resnet5000", pretrained=False)


@pytest.mark.parametrize("channels", [1, 3])
def test_small_cnn_shapes(channels):
    model = small_cnn(in_chans=channels)
    out = model(torch.randn(5, channels, 64, 64))
    assert out.shape == (5, 2) and torch.isfinite(out).all()
