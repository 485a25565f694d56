"""Session fixtures: a real local Hub on a free port with a temporary data dir and a fresh HF_HOME.

HF_ENDPOINT is read when huggingface_hub is imported, so the environment is set here, before
any test module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from localhub.ctl import free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA_DIR = SHARED / "data" / "alien-vs-predator"
WEIGHTS_DIR = SHARED / "weights"
TOKEN = "localhub_test_token"
PORT = free_port()
_TMP = Path(tempfile.mkdtemp(prefix="avp-tests-"))

os.environ.update({
    "HF_ENDPOINT": f"http://127.0.0.1:{PORT}", "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
    "HF_HOME": str(_TMP / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false",
})
os.environ.pop("HF_HUB_OFFLINE", None)


def _pin_xdist_worker() -> None:
    """Under pytest-xdist, give each worker its own share of the cores (inherited by its subprocesses and read by
    torch, OpenMP and onnxruntime): two workers that each spread over every core run slower than one alone."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and 1 < count <= len(cores):
        share = cores[int(worker.removeprefix("gw")) % count::count]
        os.sched_setaffinity(0, share)
        os.environ["OMP_NUM_THREADS"] = str(len(share))


_pin_xdist_worker()


# A test that needs one of these trains a backbone or serves the Space: it is slow whatever its body does.
SLOW_FIXTURES = {"trained_model", "app_url", "feedback_app"}


# The longest modules first (measured), so that xdist's workers, which take whole modules, finish together.
LONGEST_FIRST = ["test_small_folders.py", "test_stages_runs.py", "test_bench.py", "test_cli.py", "test_retrain.py",
                 "test_train.py", "test_feedback_loop.py", "test_space.py", "test_corrections_kept.py",
                 "test_space_controls.py", "test_any_folder.py", "test_dataset.py", "test_trust.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def hub():
    """The local Hub for this test session; yields its endpoint."""
    from localhub.ctl import start

    process = start(PORT, _TMP / "hub", token=TOKEN)
    yield os.environ["HF_ENDPOINT"]
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def avp_dataset():
    """The dataset built from the shared data, and its report (built once per session)."""
    from training.pipeline.data.folder import FolderRecipe, build_dataset

    assert DATA_DIR.is_dir(), f"the shared data must lie beside the repo: {DATA_DIR}"
    return build_dataset(FolderRecipe(data_dir=str(DATA_DIR)))


@pytest.fixture(scope="session")
def hub_dataset(hub, avp_dataset, tmp_path_factory) -> str:
    """The shared data pushed to the session's Hub; returns its repo id."""
    from training.publishing.dataset_card import push_dataset

    push_dataset(*avp_dataset, "demo/alien-vs-predator", tmp_path_factory.mktemp("dataset"))
    return "demo/alien-vs-predator"


@pytest.fixture(scope="session")
def lite0(hub) -> str:
    """The shared EfficientNet-Lite0 weights mirrored to the session's Hub, as on huggingface.co."""
    from training.demo import mirror_weights

    assert "timm/tf_efficientnet_lite0.in1k" in mirror_weights(WEIGHTS_DIR)
    return "hf-hub:timm/tf_efficientnet_lite0.in1k"


@pytest.fixture(scope="session")
def trained_model(hub_dataset, lite0, tmp_path_factory):
    """A short real run (mirrored Lite0, a subset of train, all of validation), pushed as demo/avp-model-test by
    the path every pushed model takes (training.train.release: train, faithfulness, card, push)."""
    from training.train import TrainArguments, release

    output_dir = tmp_path_factory.mktemp("train")
    args = TrainArguments(dataset_id=hub_dataset, backbone=lite0, max_train_samples=160, augmented_views=1, epochs=4,
                          output_dir=str(output_dir), model_id="demo/avp-model-test", push_to_hub=True,
                          faithfulness_images=4)
    results = release(args).results
    return args, results, "demo/avp-model-test"


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` in a subprocess with this session's Hub environment."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def kill_when(command: list[str], marker: Path, timeout: float = 300) -> None:
    """Run ``command`` (from the repo, its own process group) and SIGKILL it as soon as ``marker`` exists."""
    import signal
    import time

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def fresh_hf_home(tmp_path: Path) -> dict:
    return {"HF_HOME": str(tmp_path / "fresh_hf_home")}


@pytest.fixture(scope="module")
def app_url(trained_model):
    """The Space's app serving the test model, in this process (one per test module)."""
    os.environ["MODEL_ID"] = trained_model[2]
    from space import app, image_io, inference

    app.unexpected.clear()
    demo = app.build_demo(inference.Classifier(trained_model[2]))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                max_file_size=image_io.MAX_FILE_BYTES, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    os.environ.pop("MODEL_ID")
    # Visitors see a generic message for an unexpected exception; the tests see the exception.
    assert app.unexpected == [], app.unexpected
