"""The Space's Classifier with the timm model run by torch: training's path (faithfulness, predict, the
ONNX parity gate). Everything but the forward pass (preprocessing, the calibrated head, "neither", the
CAM) is the Space's own code, so both runtimes answer by one rule.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from torch import nn

from space.inference import Classifier, ModelFiles


class TorchClassifier(Classifier):
    # "no" (fp32, accelerate's name, as in training) by default: at batch 1 bf16 autocast can be slower
    # on a CPU (BENCHMARKS.md, bench.inference), and a CPU flag does not say which is faster.
    def __init__(self, model: str | nn.Module, precision: str = "no", revision: str | None = None,
                 ood: dict | None = None, ood_statistics: dict | None = None):
        """``model``: a Hub model id or local folder (loaded with timm at one pinned revision, with its labels
        and OOD statistics) or a timm model (then ``ood``/``ood_statistics`` as in config.json/ood.safetensors).
        """
        self.model_id, self.revision = None, revision
        if isinstance(model, str):
            files = ModelFiles(model, revision)
            config = files.config()
            ood_statistics = files.ood_statistics(config)
            prefix = "local-dir:" if files.local else "hf-hub:"
            model = timm.create_model(f"{prefix}{model}" + ("" if files.local else f"@{files.revision}"),
                                      pretrained=True)
            if not files.local:
                self.model_id, self.revision = files.model, files.revision
        else:
            config = {"label_names": model.pretrained_cfg.get("label_names"), "pretrained_cfg": model.pretrained_cfg,
                      "ood": ood}
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.to(memory_format=torch.channels_last)
        classifier = self.model.get_classifier()
        self.setup(config, (classifier.weight.detach().float().numpy(), classifier.bias.detach().float().numpy()),
                   None if ood_statistics is None else {k: np.asarray(v) for k, v in ood_statistics.items()})
        if precision not in ("no", "bf16", "fp32"):  # fp32: the earlier name of "no"
            raise ValueError(f"precision must be no (fp32) or bf16, got {precision!r}")
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def forward(self, pixels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.as_tensor(np.asarray(pixels)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=self.dtype or torch.bfloat16,
                                                    enabled=self.dtype is not None):
            feature_map = self.model.forward_features(x).float()
            pooled = self.model.forward_head(feature_map, pre_logits=True)
            logits = self.model.get_classifier()(pooled)
        return logits.float().numpy(), pooled.float().numpy(), feature_map.numpy()
