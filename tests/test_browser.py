"""The model's ONNX graph in a static page with onnxruntime-web, in Debian's chromium: the same top-1 as Python."""

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from space.image_io import load_upload
from space.inference import Classifier
from tests.conftest import DATA_DIR, ROOT

WEB = ROOT / "web"
DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _site(tmp_path: Path, model_id: str, files: list[Path]) -> Path:
    """The page, onnxruntime-web's files, the model's config and graph, and the pictures, as a static host has them."""
    from huggingface_hub import hf_hub_download

    site = tmp_path / "site"
    (site / "model" / "onnx").mkdir(parents=True)
    for name in ("index.html", "classify.js"):
        shutil.copy(WEB / name, site / name)
    (site / "node_modules").symlink_to(WEB / "node_modules")  # the page loads onnxruntime-web from there
    for name in ("config.json", "onnx/model.onnx"):
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


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed (make test installs them via apt)")
def test_browser_page_gives_pythons_top1_on_twenty_images(trained_model, tmp_path):
    assert DIST.is_dir(), "run `make web` (npm ci in web/) first"
    files = [f for c in ("alien", "predator") for f in sorted((DATA_DIR / "validation" / c).glob("*.jpg"))[:10]]
    site = _site(tmp_path, trained_model[2], files)
    server = _serve(site)
    driver = _chromium(tmp_path)
    try:
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        python = Classifier(trained_model[2])
        agree, gaps = 0, []
        for i, f in enumerate(files):
            answer = driver.execute_async_script(
                "classifyUrl(arguments[0]).then(arguments[1], e => arguments[1]({error: String(e)}))",
                f"images/{i}{f.suffix}")
            assert "error" not in answer, answer
            expected = python.predict(load_upload(f), None).confidences
            agree += answer["label"] == max(expected, key=expected.get)
            gaps.append(max(abs(answer["probabilities"][k] - expected[k]) for k in expected))
        assert agree == len(files) == 20, (agree, gaps)
        assert max(gaps) < 1e-2, gaps  # Pillow's resize is reproduced up to its fixed-point rounding
    finally:
        driver.quit()
        server.shutdown()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed (make test installs them via apt)")
def test_the_pages_file_control_answers_a_picture_and_says_what_is_wrong_with_a_non_picture(trained_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = DATA_DIR / "validation" / "predator" / "3.jpg"
    site = _site(tmp_path, trained_model[2], [picture])
    server = _serve(site)
    driver = _chromium(tmp_path)
    wait = WebDriverWait(driver, 120)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        answer = lambda d: d.find_element(By.ID, "answer").text  # noqa: E731
        wait.until(lambda d: answer(d).startswith("ready"))
        expected = Classifier(trained_model[2]).predict(load_upload(picture), None).confidences
        driver.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: answer(d) in expected)
        assert answer(driver) == max(expected, key=expected.get)
        assert set(json.loads(driver.find_element(By.ID, "probabilities").text)) == set(expected)
        driver.find_element(By.ID, "file").send_keys(str(notes))
        wait.until(lambda d: answer(d).startswith("notes.jpg"))
        assert "not an image the browser can decode" in answer(driver)
    finally:
        driver.quit()
        server.shutdown()
