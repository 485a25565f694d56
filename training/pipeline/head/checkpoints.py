"""Head-epoch checkpoints with accelerate: a run killed at any point resumes to the same model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FRESH_STATE = {"epoch": -1, "best_holdout": -1.0, "best_holdout_loss": float("inf")}  # before the first head epoch


def save_checkpoint(accelerator, checkpoints: Path, state: dict, log: dict, output_dir: Path) -> None:
    path = checkpoints / f"epoch_{state['epoch']:03d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps(state))  # written last: marks the checkpoint complete
        with open(output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
        for old in sorted(checkpoints.glob("epoch_*"))[:-2]:  # keep the last two
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_state(accelerator, checkpoints: Path) -> dict:
    complete = sorted(c for c in checkpoints.glob("epoch_*") if (c / "trainer_state.json").is_file())
    if not complete:
        return dict(FRESH_STATE)  # killed before the first head epoch ended
    accelerator.load_state(str(complete[-1]))
    state = json.loads((complete[-1] / "trainer_state.json").read_text())
    accelerator.print(f"resumed from {complete[-1]} (head epoch {state['epoch']} done)")
    return state
