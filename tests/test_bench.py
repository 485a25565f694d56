"""Smoke runs of the benchmarks (no timing assertions: the numbers belong in BENCHMARKS.md)."""

import re

import pytest

from tests.conftest import run_module


def _rows(output: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith("| ") and not line.startswith("| loop") and not line.startswith("| model")]


@pytest.mark.slow
def test_train_throughput_quick():
    result = run_module("bench.train_throughput", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _rows(result.stdout)
    assert [r[0].split(" (")[0] for r in rows][:1] == ["plain fp32 eager NCHW loop"]
    assert len(rows) == 5 and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    assert any(r[0].startswith("ours, onnxruntime fp32") for r in rows)


@pytest.mark.slow
def test_inference_quick():
    result = run_module("bench.inference", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _rows(result.stdout)
    methods = {r[2] for r in rows}
    assert {"predict alone", "+ CAM (+ overlay)", "+ Grad-CAM (+ overlay)"} <= methods
    assert {r[1] for r in rows} == {"onnxruntime", "torch fp32", "torch bf16"}
    assert all(re.fullmatch(r"\d+\.\d", r[3]) for r in rows)


@pytest.mark.slow
def test_roofline_quick():
    result = run_module("bench.roofline", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "GFLOP/image" in result.stdout
    rows = [r for r in _rows(result.stdout) if r[0] in ("fp32", "bf16")]
    assert [r[1] for r in rows] == ["eager, default allocator", "eager", "eager", "compiled"]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


@pytest.mark.slow
def test_scale_quick():
    result = run_module("bench.scale", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "peak RSS" in result.stdout and "paper estimate" in result.stdout
    replicated = [r for r in _rows(result.stdout) if r[0] in ("1x", "4x")]
    bank, passes = replicated[:2], replicated[2:]
    assert [int(r[1]) for r in bank] == [1000, 4000] and all(int(r[3]) > 0 and int(r[7]) > 0 for r in bank)
    assert [int(r[1]) for r in passes] == [8, 32]


@pytest.mark.slow
def test_scale_stages_quick():
    result = run_module("bench.scale", "--quick", "--stages_only")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r for r in _rows(result.stdout) if r[0] in ("1x", "4x")]
    assert [int(r[1]) for r in rows] == [500, 2000]
    assert [round(float(r[2])) for r in rows] == [9, 36]  # 9,408 fp16 values a row
    assert all(int(r[3]) > 0 and float(r[5]) > 0 for r in rows)


def test_space_start_side_by_side(trained_model):
    result = run_module("bench.space_start", "--model_id", trained_model[2], "--runs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r[0].split(" (")[0]: r for r in _rows(result.stdout) if r[0] != "variant"}
    assert set(rows) == {"onnxruntime Space", "torch Space"}
    assert rows["onnxruntime Space"][3] == "no" and rows["torch Space"][3] == "yes"  # /proc/<pid>/maps
    assert rows["onnxruntime Space"][4] == rows["torch Space"][4] in ("alien", "predator", "neither")
    assert all(float(r[1]) > 0 and int(r[2]) > 0 for r in rows.values())


@pytest.mark.slow
def test_time_to_accuracy_quick(hub_dataset, lite0):
    result = run_module("bench.time_to_accuracy", "--quick", "--dataset_id", hub_dataset, "--backbone", lite0)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r for r in _rows(result.stdout) if r[0].startswith(("ours", "plain"))]
    assert [r[0] for r in rows] == ["ours (training.train defaults)", "plain fp32 loop, 1 epochs"]
    for row in rows:
        assert 0.0 <= float(row[1].split()[0]) <= 1.0 and float(row[3]) > 0 and int(row[4]) > 100
    assert "baseline accuracy per epoch:" in result.stdout


@pytest.mark.slow
def test_localhub_quick():
    result = run_module("bench.localhub", "--upload_mb", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r[0]: r[1] for r in _rows(result.stdout)}
    assert float(rows["8 MB LFS upload: server peak RSS growth"].split()[0]) < 100  # streamed, never held whole
    assert all(float(rows[k].split()[0]) > 0 for k in rows if k.startswith("repo_info"))


@pytest.mark.slow
def test_upload_memory_answers_or_refuses_every_worst_case_upload():
    import json

    result = run_module("bench.upload_memory")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    uploads = [line for line in lines if "upload" in line]
    assert len(uploads) == 13 and lines[-1]["peak_over_idle"] > 0
    for line in uploads:  # a class of the random model, or a refusal that says why (never the generic message)
        assert line["answer"] in ("a", "b", "neither") or (
            line["answer"].startswith("refused:") and "could not process" not in line["answer"]), line
    refused = {line["upload"] for line in uploads if line["answer"].startswith("refused:")}
    assert {"progressive_100mp.jpg", "bomb_81mp.png", "onebit_144mp.png", "webp_16mp.webp"} <= refused
    kinds = ("deep", "grey", "rgba", "tiff", "webp")  # each at its format's pixel limit, and answered
    at_limits = {line["upload"] for line in uploads if line["upload"].split("_")[0] in kinds
                 and line["upload"] not in ("webp_16mp.webp", "deep_16mp.tiff")}
    assert len(at_limits) == 5 and not refused & (at_limits | {"baseline_59mp.jpg", "cmyk.jpg", "animated.gif"})
