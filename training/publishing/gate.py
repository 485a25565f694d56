"""The regression gate: the candidate against the model on ``main``, on the validation split.

Each rule is one row of the pull request's table, marked pass or fail; the candidate is merged only
when every row passes (ties pass: a retrain on the same data should be able to land):

- leak-free accuracy: not worse than main;
- ECE (calibrated): at most ``MAX_ECE``, or not worse than main;
- validation answered "neither": at most ``MAX_NEITHER``, or not worse than main;
- OOD AUROC (test half): not more than ``MAX_AUROC_DROP`` below main.

A figure main's older run did not measure passes (there is nothing to compare with).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..pipeline.export.results import load_results

MAX_ECE = 0.03
MAX_NEITHER = 0.02
MAX_AUROC_DROP = 0.01
GATE_METRIC = "leak-free accuracy"  # the headline of the commit message


@dataclass
class Rule:
    name: str
    rule: str
    passes: bool
    main: float | None
    candidate: float | None


def metrics(results: dict | None) -> dict[str, float | None]:
    """The gate's figures from a run's results.json (None where an older run did not measure one)."""
    results = load_results(results or None)
    if not results:
        return {}
    clean, ood = results["validation_leak_free"], results["ood"]
    used = ood["methods"].get(ood.get("method"), {})
    return {"leak-free accuracy": clean["accuracy"], "leak-free macro F1": clean["f1"],
            "ECE": results["calibration"].get("validation_after", {}).get("ece"),
            "validation neither": ood["validation"].get("neither"), "OOD AUROC": used.get("auroc_test")}


def rules(current: dict | None, candidate: dict, max_ece: float = MAX_ECE, max_neither: float = MAX_NEITHER,
          max_auroc_drop: float = MAX_AUROC_DROP) -> list[Rule]:
    before, after = metrics(current), metrics(candidate)

    def rule(name: str, text: str, ok) -> Rule:
        old, new = before.get(name), after.get(name)
        return Rule(name, text, old is None or new is None or bool(ok(old, new)), old, new)

    return [
        rule("leak-free accuracy", "not worse than main", lambda old, new: new >= old),
        rule("ECE", f"≤ {max_ece} or not worse than main", lambda old, new: new <= max_ece or new <= old),
        rule("validation neither", f"≤ {max_neither:.0%} or not worse than main",
             lambda old, new: new <= max_neither or new <= old),
        rule("OOD AUROC", f"drops by at most {max_auroc_drop}", lambda old, new: new >= old - max_auroc_drop),
    ]


def other_split(current: dict | None, candidate: dict) -> str | None:
    """Why main's figures and the candidate's cannot be compared (measured on different validation splits), or
    None: the same split, or a run that did not record its split (an older main)."""
    before, after = ((load_results(r or None) or {}).get("data") or {} for r in (current, candidate))
    if not before.get("validation_fingerprint") or not after.get("validation_fingerprint"):
        return None
    if before["validation_fingerprint"] == after["validation_fingerprint"]:
        return None
    return (f"main was measured on another validation split (dataset {before.get('dataset_id')} at "
            f"{(before.get('dataset_revision') or 'a folder')[:12]}, fingerprint {before['validation_fingerprint']}) "
            f"than the candidate ({after.get('dataset_id')} at {(after.get('dataset_revision') or 'a folder')[:12]}, "
            f"fingerprint {after['validation_fingerprint']}): their figures cannot be compared")


def decide(first: bool, failed: list[Rule], force: bool = False, no_merge: bool = False) -> str:
    """What retraining does with a candidate: "first" (a new repo: it went to main), "review" (the pull request
    waits for a person), "merge" (every rule passes, or --force) or "refuse" (the pull request stays open)."""
    if first:
        return "first"
    if no_merge:
        return "review"
    return "merge" if not failed or force else "refuse"


def not_worse(current: dict | None, candidate: dict, **limits) -> bool:
    return current is None or all(r.passes for r in rules(current, candidate, **limits))


def failures(current: dict | None, candidate: dict, **limits) -> list[Rule]:
    return [] if current is None else [r for r in rules(current, candidate, **limits) if not r.passes]


def comparison_table(current: dict | None, candidate: dict, feedback: dict | None = None, **limits) -> str:
    """Markdown: one row per rule, main vs candidate, pass or fail; the macro F1; the verdict; feedback counts."""
    def shown(value):
        return "n/a" if value is None else f"{value:.4f}"

    checked = rules(current, candidate, **limits)
    lines = ["| metric | rule | main | candidate | gate |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.name} | {r.rule} | {shown(r.main)} | {shown(r.candidate)} | {'pass' if r.passes else 'FAIL'} |"
              for r in checked]
    f1 = "leak-free macro F1"
    lines.append(f"| {f1} | reported | {shown(metrics(current).get(f1))} | {shown(metrics(candidate)[f1])} | |")
    failed = [r.name for r in checked if not r.passes] if current else []
    verdict = "not worse: merge" if not failed else f"worse ({', '.join(failed)}): keep main"
    mismatch = other_split(current, candidate)
    verdict = f"not comparable: {mismatch}; keep main" if mismatch else verdict
    lines += ["", f"Gate: **{verdict}**."]
    if feedback:
        lines.append(f"Feedback: {feedback['received']} received, {feedback['added']} added, "
                     f"{feedback['refused']} refused{feedback_reasons(feedback)}.")
        lines += [f"- refused row {r['row']}: {r['why']}" for r in feedback.get("refused_rows", [])[:20]]
    return "\n".join(lines)


def feedback_reasons(feedback: dict) -> str:
    reasons = feedback.get("reasons") or {}
    return f" ({', '.join(f'{n} {why}' for why, n in reasons.items())})" if reasons else ""
