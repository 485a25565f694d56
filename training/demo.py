"""The offline end-to-end job behind ``make demo``, against whatever Hub HF_ENDPOINT names.

1. mirror ``../shared/weights/<name>`` to the Hub as ``timm/<name>`` (so ``hf-hub:`` ids work offline),
2. check, build and push the dataset with its card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from .dataset import DatasetArguments, build_dataset, leak_summary
from .errors import UserError, hub_errors, run_cli
from .publish_dataset import push_dataset


@dataclass
class DemoArguments:
    data_dir: str = field(default="../shared/data/alien-vs-predator")
    weights_dir: str = field(default="../shared/weights", metadata={"help": "timm Hub-layout folders to mirror"})
    namespace: str = field(default="demo", metadata={"help": "namespace for the dataset, model and Space repos"})
    output_dir: str = field(default="outputs/demo")


def mirror_weights(weights_dir: Path) -> list[str]:
    """Upload each ``<weights_dir>/<name>`` folder as the model repo ``timm/<name>`` (skipped if present)."""
    if not weights_dir.is_dir():
        raise UserError(f"{weights_dir}: no such folder of pretrained weights")
    api, mirrored = HfApi(), []
    for folder in sorted(p for p in weights_dir.iterdir() if (p / "model.safetensors").is_file()):
        repo_id = f"timm/{folder.name}"
        with hub_errors(f"mirroring {folder} to {repo_id}"):
            api.create_repo(repo_id, exist_ok=True)
            if "model.safetensors" not in api.list_repo_files(repo_id):
                api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Mirror of the shared weights")
        mirrored.append(repo_id)
    return mirrored


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    output_dir = Path(args.output_dir)
    print(f"[1/2] weights mirrored: {', '.join(mirror_weights(Path(args.weights_dir)))}")
    dataset_id = f"{args.namespace}/alien-vs-predator"
    dataset, report = build_dataset(DatasetArguments(data_dir=args.data_dir))
    push_dataset(dataset, report, dataset_id, output_dir / "dataset")
    print(f"[2/2] dataset pushed: {dataset_id} ({', '.join(f'{s} {len(d)}' for s, d in dataset.items())})")
    print(f"      {leak_summary(report)}")


if __name__ == "__main__":
    run_cli(main)
