"""``training.train``'s arguments (one dataclass, parsed by ``cli.parse``; demo, retrain and study build it too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .cli import Renamed, RepoIdFlag, check_choice, require
from .pipeline.data.augment import VARIANTS
from .pipeline.features.extractor import PRECISIONS
from .pipeline.features.model import DEFAULT_BACKBONE
from .pipeline.features.runtime import RUNTIMES, check_runtime
from .pipeline.features.tuning import STAGE_CHOICES
from .pipeline.recipe import DataRecipe, FeatureRecipe, HeadRecipe, Recipe, StageRecipe, TrustRecipe
from .pipeline.trust.ood import NEITHER_RATE, UNSURE_RATE

DEPRECATED = (Renamed("dataset", "dataset_id"), RepoIdFlag("push_to_hub", "model_id"))


@dataclass
class TrainArguments:
    dataset_id: str = field(metadata={"help": "Hub dataset id, or a local image folder / save_to_disk folder"})
    backbone: str = field(default=DEFAULT_BACKBONE, metadata={"help": "timm model name or hf-hub: id"})
    pretrained: bool = field(default=True, metadata={"help": "load the backbone's pretrained weights"})
    augmentation: Literal[VARIANTS] = field(default="base", metadata={"help": "on-the-fly augmentation of train"})
    augmented_views: int = field(default=6, metadata={"help": "augmented passes over train through the backbone"})
    epochs: int = field(default=10, metadata={"help": "head epochs over the cached features"})
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    # Chosen by cross-validation on train (bench.crop_choice), never on validation; saved in the config.
    crop_pct: float | None = field(default=1.0, metadata={"help": "centre-crop fraction (None: the backbone's "
                                                                    "pretrained_cfg); saved in the model's config"})
    seed: int = 42
    holdout_fraction: float = field(default=0.1, metadata={"help": "stratified slice of train for model selection"})
    validation_fraction: float = field(default=0.2, metadata={
        "help": "a dataset without a validation split: this stratified, seeded slice of train becomes one"})
    class_weight: Literal["none", "balanced"] = field(default="none", metadata={
        "help": "balanced: weight the loss by n / (classes x count), for imbalanced classes"})
    flip_tta: bool = field(default=True, metadata={
        "help": "also report accuracy with flip test-time augmentation, as its own row (the headline never uses "
                "it: no user path applies it)"})
    gradient_accumulation_steps: int = 1
    runtime: Literal[RUNTIMES] = field(default="auto", metadata={
        "help": "what runs the frozen backbone's passes: torch, onnxruntime (fp32), or auto: the fastest of torch "
                "fp32, torch bf16 and onnxruntime, measured here"})
    mixed_precision: Literal[PRECISIONS] = field(default="auto", metadata={
        "help": "the backbone passes' precision and the Accelerator's (a stage tuning's steps autocast to it; "
                "the head trains in fp32); auto: the faster of bf16 and no (fp32), measured here"})
    torch_compile: Literal["auto", "yes", "no"] = field(default="auto", metadata={
        "help": "compile the frozen backbone: auto (when it pays: a few thousand images)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only this many training images"})
    num_workers: int = 0
    output_dir: str = "outputs/train"
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    model_id: str | None = field(default=None, metadata={"help": "model repo id (with --push_to_hub)"})
    push_to_hub: bool = field(default=False, metadata={"help": "push the model and its card to --model_id"})
    private: bool = False
    title: str | None = field(default=None, metadata={"help": "the model card's title (default: the repo name)"})
    description: str | None = field(default=None, metadata={"help": "the model card's opening paragraph (markdown)"})
    license: str = field(default="apache-2.0", metadata={"help": "Hub licence id of the model"})
    study_dir: str = field(default="outputs/study", metadata={"help": "training.study output to put in the card"})
    drop_suspects: bool = field(default=False, metadata={
        "help": "leave out the training images confident learning flags as mislabelled (the card then shows "
                "validation accuracy with and without them)"})
    unsure_rate: float = field(default=UNSURE_RATE, metadata={
        "help": "share of training images (cross-fitted) past the first \"neither\" limit: answered unsure"})
    neither_rate: float = field(default=NEITHER_RATE, metadata={
        "help": "share of training images (cross-fitted) past the second limit: answered neither"})
    faithfulness_images: int = field(default=40, metadata={
        "help": "leak-free validation images the heatmaps' faithfulness is measured on (with --push_to_hub)"})
    allow_private_images: bool = field(default=False, metadata={
        "help": "let images of a private dataset (the card's suspects and heatmaps) go into a public model repo"})
    dataset_revision: str | None = field(default=None, metadata={
        "help": "the dataset's branch, tag or commit (default: main); resolved to a commit at start and recorded, "
                "so a retrain reads the same data unless told otherwise"})
    feedback_dataset: str | None = field(default=None, metadata={
        "help": "the Space's corrections (dataset id): checked, de-duplicated, added to train only"})
    unfreeze_last_stages: str = field(default="0", metadata={
        "help": "tune the backbone's last N stages (1 or 2) on cached activations before the head; 0: frozen; "
                "auto: tune the last stage only if it answers clearly more of the train holdout right and still "
                "tells the OOD set's selection half apart (the card says why)"})
    stage_epochs: int = field(default=6, metadata={
        "help": "epochs over the cached activations (every view) when tuning stages; the generated folders' train "
                "holdouts still gained after 3"})
    stage_learning_rate: float = field(default=1e-3, metadata={
        "help": "the tuned stages' learning rate (the head keeps --learning_rate)"})

    def __post_init__(self) -> None:
        check_choice("augmentation", self.augmentation, VARIANTS)
        check_choice("mixed_precision", self.mixed_precision, PRECISIONS)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_runtime(self.runtime, self.mixed_precision)
        check_choice("torch_compile", self.torch_compile, ("auto", "yes", "no"))
        check_choice("class_weight", self.class_weight, ("none", "balanced"))
        check_choice("unfreeze_last_stages", self.unfreeze_last_stages, STAGE_CHOICES)
        require(self.unfreeze_last_stages == "0" or self.runtime != "onnxruntime",
                "--unfreeze_last_stages runs the frozen part with torch: use --runtime torch or auto")
        require(not self.push_to_hub or bool(self.model_id), "--push_to_hub needs --model_id (the repo to push to)")
        require(0 < self.neither_rate <= self.unsure_rate < 1,
                f"need 0 < --neither_rate <= --unsure_rate < 1, got {self.neither_rate} and {self.unsure_rate}")
        for name in ("holdout_fraction", "validation_fraction"):
            require(0 < getattr(self, name) < 1, f"--{name} must be between 0 and 1, got {getattr(self, name)}")

    def recipe(self) -> Recipe:
        """The run's recipe, step by step: the only place the arguments become what the stages read."""
        return Recipe(
            backbone=self.backbone, pretrained=self.pretrained, crop_pct=self.crop_pct,
            output_dir=Path(self.output_dir),
            data=DataRecipe(self.dataset_id, self.dataset_revision, self.validation_fraction, self.holdout_fraction,
                            self.max_train_samples, self.feedback_dataset, self.seed),
            features=FeatureRecipe(self.augmentation, self.augmented_views, self.batch_size, self.num_workers,
                                   self.runtime, self.mixed_precision, self.torch_compile, self.seed, self.resume),
            head=HeadRecipe(self.epochs, self.batch_size, self.learning_rate, self.weight_decay, self.label_smoothing,
                            self.class_weight, self.gradient_accumulation_steps, self.seed, self.resume,
                            self.drop_suspects),
            stages=StageRecipe(self.unfreeze_last_stages, self.stage_epochs, self.stage_learning_rate),
            trust=TrustRecipe(self.unsure_rate, self.neither_rate, self.flip_tta, self.seed),
        )
