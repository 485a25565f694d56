"""The model in a static page with onnxruntime-web, in Debian's chromium: the Space's answers, words and heatmaps."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from space.image_io import load_upload
from space.inference import CAM_METHODS, Classifier, headline
from tests.conftest import DATA_DIR, ROOT

WEB = ROOT / "web"
DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver "
                                    "are not installed (make test installs them via apt)")


def _site(tmp_path: Path, model_id: str, files: list[Path]) -> Path:
    """The page, onnxruntime-web's files, the model repo's files and the pictures, as a static host has them."""
    from huggingface_hub import hf_hub_download

    site = tmp_path / "site"
    (site / "model" / "onnx").mkdir(parents=True)
    for name in ("index.html", "classify.js"):
        shutil.copy(WEB / name, site / name)
    (site / "node_modules").symlink_to(WEB / "node_modules")  # the page loads onnxruntime-web from there
    for name in ("config.json", "onnx/model.onnx", "model.safetensors", "ood.safetensors"):
        shutil.copy(hf_hub_download(model_id, name), site / "model" / name)
    (site / "images").mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, site / "images" / f"{i}{f.suffix}")
    return site


def _serve(site: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                              ".mjs": "text/javascript", ".wasm": "application/wasm"}
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chromium(tmp_path: Path):
    """Debian's headless chromium with a profile of its own."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _ood_pictures(folder: Path, count: int = 10) -> list[Path]:
    """Pictures of other things: the project's OOD set's test half, one of each kind first."""
    from training.pipeline.trust.ood_set import ood_images

    test = [item for item in ood_images(seed=0) if item.part == "test"]
    kinds = list(dict.fromkeys(item.kind for item in test))
    chosen = [next(item for item in test if item.kind == kind) for kind in kinds]
    chosen += [item for item in test if item not in chosen]
    folder.mkdir(exist_ok=True)
    paths = []
    for i, item in enumerate(chosen[:count]):
        paths.append(folder / f"ood_{i}.png")
        item.image.convert("RGB").save(paths[-1])
    return paths


@needs_chromium
def test_the_page_gives_the_spaces_verdicts_probabilities_and_heatmaps(trained_model, tmp_path):
    """20 validation pictures and 10 of other things: the verdict of training.predict (the Space's Classifier),
    every probability within 1e-3 and each heatmap correlated with the Space's at 0.99 or more."""
    assert DIST.is_dir(), "run `make web` (npm ci in web/) first"
    files = [f for c in ("alien", "predator") for f in sorted((DATA_DIR / "validation" / c).glob("*.jpg"))[:10]]
    files += _ood_pictures(tmp_path / "ood")
    site = _site(tmp_path, trained_model[2], files)
    server = _serve(site)
    driver = _chromium(tmp_path)
    python = Classifier(trained_model[2])
    try:
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        verdicts, gaps, correlations = [], [], []
        for i, f in enumerate(files):
            method = CAM_METHODS[i % len(CAM_METHODS)]
            answer = driver.execute_async_script(
                "classifyUrl(arguments[0], arguments[1]).then(arguments[2], e => arguments[2]({error: String(e)}))",
                f"images/{i}{f.suffix}", method)
            assert "error" not in answer, answer
            expected = python.predict(load_upload(f), method)
            verdicts.append((answer["verdict"], expected.verdict))
            assert answer["label"] == expected.label and answer["headline"] == headline(expected, python.labels)
            gaps.append(max(abs(answer["probabilities"][k] - expected.confidences[k]) for k in python.labels))
            cam = np.asarray(answer["cam"]["data"]).reshape(answer["cam"]["shape"])
            correlations.append(float(np.corrcoef(cam.ravel(), expected.cam.ravel())[0, 1])
                                if expected.cam.std() > 0 else float(np.allclose(cam, expected.cam)))
        assert all(a == b for a, b in verdicts), verdicts
        assert any(b == "neither" for _, b in verdicts[20:]), verdicts  # the "neither" branch is exercised
        assert max(gaps) < 1e-3, gaps
        assert min(correlations) >= 0.99, correlations
    finally:
        driver.quit()
        server.shutdown()


@needs_chromium
def test_every_control_of_the_page_and_what_it_says_for_a_non_picture(trained_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    picture = DATA_DIR / "validation" / "predator" / "3.jpg"
    site = _site(tmp_path, trained_model[2], [picture])
    server = _serve(site)
    driver = _chromium(tmp_path)
    wait = WebDriverWait(driver, 120)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    text = lambda element: driver.find_element(By.ID, element).text  # noqa: E731
    heatmap = lambda: driver.execute_script("return document.getElementById('heatmap').toDataURL()")  # noqa: E731
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        wait.until(lambda d: text("answer").startswith("ready"))
        python = Classifier(trained_model[2])
        assert text("model").endswith("/model/")  # which model the page runs
        assert Select(driver.find_element(By.ID, "method")).first_selected_option.text == python.cam_method
        expected = python.predict(load_upload(picture), None)
        driver.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: text("verdict"))
        assert text("answer") == headline(expected, python.labels) and text("verdict") == expected.verdict
        assert {line.split(":")[0] for line in text("probabilities").splitlines()} == set(python.labels)
        first = heatmap()
        Select(driver.find_element(By.ID, "method")).select_by_visible_text("Layer-CAM")
        wait.until(lambda d: heatmap() != first)
        second = heatmap()
        driver.execute_script("const o = document.getElementById('opacity'); o.value = '1';"
                              "o.dispatchEvent(new Event('change'));")
        wait.until(lambda d: heatmap() != second)
        driver.find_element(By.ID, "file").send_keys(str(notes))
        wait.until(lambda d: text("error").startswith("notes.jpg"))
        assert "not an image the browser can decode" in text("error")
    finally:
        driver.quit()
        server.shutdown()


@needs_chromium
def test_the_static_space_from_the_local_hub_answers_sure_with_a_heatmap_and_neither(trained_model, tmp_path):
    """The page published as a static Space, opened from the local Hub: the model comes from the Hub by id and
    commit, a validation picture is answered "sure" with a heatmap, a photo of something else "neither"."""
    import os

    from huggingface_hub import HfApi
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from training.publishing.static_space import publish_static_space

    model_id = trained_model[2]
    publish_static_space("demo/avp-browser-test", model_id, "Alien vs. Predator")
    python = Classifier(model_id)
    picture = next(f for f in sorted((DATA_DIR / "validation" / "alien").glob("*.jpg"))
                   if python.predict(load_upload(f), None).label == "alien"
                   and python.predict(load_upload(f), None).verdict == "sure")
    other = next(f for f in _ood_pictures(tmp_path / "ood", 40) if python.predict(load_upload(f), None).verdict
                 == "neither")
    driver = _chromium(tmp_path)
    wait = WebDriverWait(driver, 120)
    text = lambda element: driver.find_element(By.ID, element).text  # noqa: E731
    try:
        driver.get(f"{os.environ['HF_ENDPOINT']}/static-spaces/demo/avp-browser-test/index.html")
        wait.until(lambda d: text("answer").startswith("ready") or text("error"))
        assert not text("error"), text("error")
        assert text("model") == f"{model_id} at revision {HfApi().model_info(model_id).sha}"
        driver.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: text("verdict"))
        assert text("verdict") == "sure" and text("answer") == "alien"
        assert driver.execute_script("const c = document.getElementById('heatmap'); return c.width * c.height") > 0
        driver.find_element(By.ID, "file").send_keys(str(other))
        wait.until(lambda d: text("verdict") == "neither")
        assert text("answer").startswith("Neither")
    finally:
        driver.quit()
