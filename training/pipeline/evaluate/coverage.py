"""What a run could not measure, or measured from little, in one line each: a small folder leaves figures out
rather than inventing them, and the card says which and why."""

from __future__ import annotations

LISTED = 8  # class names named in a line before "…"
FEW_HELD_OUT = 500  # held-out images under which a temperature kept nearer 1 is listed (the card always says it)


def named(names: list[str]) -> str:
    return ", ".join(names[:LISTED]) + (f", … ({len(names)} in all)" if len(names) > LISTED else "")


def unmeasured(results: dict) -> list[str]:
    """The lines for ``results["not_measured"]`` (empty for a folder with enough images everywhere)."""
    lines = []
    absent = [name for name, n in results["class_balance"]["validation"].items() if n == 0]
    if absent:
        lines.append(f"no validation image for {len(absent)} classes ({named(absent)}): their precision, recall "
                     "and F1 are not measured")
    minimum = results.get("holdout_minimum", 3)
    if results["holdout_images"] == 0:
        chosen = ("chosen by the out-of-fold heads' log loss" if results.get("selected_on") == "out-of-fold"
                  else "not chosen: the last is kept")
        lines.append(f"no holdout (no class has the {minimum} training images one holdout image needs): the head's "
                     f"epoch was {chosen}, and no holdout accuracy is reported")
    elif holdout_missing := results.get("holdout_missing"):
        lines.append(f"no holdout image for {len(holdout_missing)} classes with fewer than {minimum} training images "
                     f"({named(holdout_missing)}): their images are held out only by the out-of-fold heads")
    scored = results["mislabels"].get("scored_images", results["train_images"])
    if scored == 0:
        lines.append("no cross-fitting folds (one training image per class): no training image was scored by a head "
                     "that never saw it")
    elif scored < results["train_images"]:
        lines.append(f"{results['train_images'] - scored} training images of classes with a single image (or "
                     "near-duplicate group) were never held out: calibration, the mislabel finder and the "
                     "\"neither\" limits do not use them")
    calibration = results["calibration"]
    if calibration["held_out_images"] < 2:
        lines.append("calibration: too few held-out images to fit a temperature; the probabilities are unscaled")
    elif not calibration.get("pinned", True):
        lines.append(f"calibration: the {calibration['held_out_images']} held-out images do not pin the temperature "
                     f"down (the NLL is as low at the edge of T's range as at "
                     f"{calibration['temperature_fitted']:.3g}); T = 1")
    elif calibration["shrinkage"] < 1 and calibration["held_out_images"] < FEW_HELD_OUT:
        lines.append(f"calibration fitted on {calibration['held_out_images']} held-out images: cross-validated over "
                     f"them, T {calibration['temperature_fitted']:.3f} is kept nearer 1, at "
                     f"{calibration['temperature']:.3f} (log T x {calibration['shrinkage']:.1f})")
    ood = results["ood"]
    if ood.get("extrapolated"):
        few = ood["extrapolated"]
        lines.append(f"\"neither\": {ood['scored_images']} held-out scores are too few to place the "
                     f"{' and '.join(few)} limit{'s' if len(few) > 1 else ''} by share; extrapolated by a normal "
                     "tail, which errs towards accepting real pictures")
    if len(ood["methods"]) < 4:
        lines.append(f"\"neither\": only {', '.join(ood['methods'])} could be scored on images it never saw")
    if results["mislabels"]["method"].startswith("not run"):
        lines.append("mislabel finder: not run, too few images held out of fold")
    stages = results.get("stages", {})
    if stages.get("requested") == "auto" and stages.get("holdout_predictions") == 0:
        lines.append("--unfreeze_last_stages auto: no holdout to judge a tuning by, so the backbone stays frozen")
    return lines
