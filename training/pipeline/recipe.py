"""The training recipe as the stages read it: small frozen records, made once from a command's arguments.

A stage takes the record of its own step (or plain values), never the command line, so a call site shows
what a step depends on and a test builds one without faking an argument parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataRecipe:
    """Which data, and how train is split for model selection."""

    dataset_id: str
    revision: str | None = None
    validation_fraction: float = 0.2  # a dataset without a validation split gets this seeded slice of train
    holdout_fraction: float = 0.1
    max_train_samples: int | None = None
    feedback_dataset: str | None = None  # the Space's corrections: train only
    seed: int = 42


@dataclass(frozen=True)
class FeatureRecipe:
    """How the frozen backbone's passes run."""

    augmentation: str = "base"
    augmented_views: int = 6
    batch_size: int = 64
    num_workers: int = 0
    runtime: str = "auto"
    mixed_precision: str = "auto"
    torch_compile: str = "auto"
    seed: int = 42
    resume: bool = False


@dataclass(frozen=True)
class HeadRecipe:
    """How every linear head is trained on the cached features (the final one, the fold heads, the probes)."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    class_weight: str = "none"
    gradient_accumulation_steps: int = 1
    seed: int = 42
    resume: bool = False
    drop_suspects: bool = False


@dataclass(frozen=True)
class StageRecipe:
    """``--unfreeze_last_stages``: which of the backbone's last stages are tuned, and how."""

    requested: str = "0"  # "0" (frozen), "1", "2" or "auto"
    epochs: int = 6
    learning_rate: float = 1e-3

    @property
    def tuning(self) -> bool:
        return self.requested != "0"


@dataclass(frozen=True)
class TrustRecipe:
    """What the calibrated head says when it does not know."""

    unsure_rate: float
    neither_rate: float
    flip_tta: bool = True  # a row of its own in the report, never the headline
    seed: int = 42

    @property
    def rates(self) -> tuple[float, float]:
        return self.unsure_rate, self.neither_rate


@dataclass(frozen=True)
class Recipe:
    """One training run, step by step."""

    backbone: str
    pretrained: bool
    crop_pct: float | None
    output_dir: Path
    data: DataRecipe
    features: FeatureRecipe
    head: HeadRecipe
    stages: StageRecipe
    trust: TrustRecipe
