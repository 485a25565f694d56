"""The regression gate: the candidate against the model on ``main``, on the leak-free validation split.

The table goes into the pull request's description; the candidate is merged only when it is not
worse on ``GATE_METRIC`` (ties merge: a retrain on the same data should be able to land).
"""

from __future__ import annotations

GATE_METRIC = "leak-free accuracy"


def metrics(results: dict | None) -> dict[str, float | None]:
    """The gate's figures from a run's results.json (None where an older run did not measure one)."""
    if not results:
        return {}
    clean = results.get("validation_leak_free") or results["validation"]
    ood = results.get("ood") or {}
    used = (ood.get("methods") or {}).get(ood.get("method"), {})
    return {"leak-free accuracy": clean["accuracy"], "leak-free macro F1": clean["f1"],
            "ECE (all validation, calibrated)": (results.get("calibration") or {}).get("validation_after",
                                                                                       {}).get("ece"),
            "OOD AUROC (test half)": used.get("auroc_test")}


def not_worse(current: dict | None, candidate: dict) -> bool:
    before, after = metrics(current).get(GATE_METRIC), metrics(candidate)[GATE_METRIC]
    return before is None or after >= before


def comparison_table(current: dict | None, candidate: dict, feedback: dict | None = None) -> str:
    """Markdown: one row per metric, main vs candidate, the gate's verdict, and the feedback counts."""
    before, after = metrics(current), metrics(candidate)

    def shown(value):
        return "n/a" if value is None else f"{value:.4f}"

    rows = [f"| {name} | {shown(before.get(name))} | {shown(value)} |" for name, value in after.items()]
    verdict = "not worse: merge" if not_worse(current, candidate) else "worse: keep main"
    lines = ["| metric | main | candidate |", "| --- | --- | --- |", *rows, "",
             f"Gate ({GATE_METRIC}): **{verdict}**."]
    if feedback:
        lines.append(f"Feedback: {feedback['received']} received, {feedback['added']} added, "
                     f"{feedback['refused']} refused{feedback_reasons(feedback)}.")
        lines += [f"- refused row {r['row']}: {r['why']}" for r in feedback.get("refused_rows", [])[:20]]
    return "\n".join(lines)


def feedback_reasons(feedback: dict) -> str:
    reasons = feedback.get("reasons") or {}
    return f" ({', '.join(f'{n} {why}' for why, n in reasons.items())})" if reasons else ""
