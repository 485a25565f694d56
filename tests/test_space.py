"""The Space: predict and CAM without a server, bad uploads, the app under load, the published copy."""

import io
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from localhub.ctl import free_port
from space import image_io, inference  # noqa: E402
from tests.conftest import DATA_DIR, ROOT


@pytest.fixture(scope="module")
def random_resnet50(hub, tmp_path_factory) -> str:
    """A frozen ResNet50 with random weights and a 2-class head, in the model repo layout."""
    from huggingface_hub import HfApi

    from training.pipeline.export.onnx_export import export_onnx
    from training.pipeline.features.model import build_model, save_model

    folder = save_model(build_model("resnet50", 2, pretrained=False), ["alien", "predator"],
                        tmp_path_factory.mktemp("resnet50"))
    export_onnx(folder)
    HfApi().create_repo("demo/resnet50-random", exist_ok=True)
    HfApi().upload_folder(repo_id="demo/resnet50-random", folder_path=folder)
    return "demo/resnet50-random"


def _validation(name: str) -> Image.Image:
    return image_io.load_upload(DATA_DIR / "validation" / name)


@pytest.mark.parametrize("which", ["resnet50", "lite0"])
def test_predict_and_every_cam_method(which, random_resnet50, trained_model):
    model_id = random_resnet50 if which == "resnet50" else trained_model[2]
    classifier = inference.Classifier(model_id)
    image = _validation("alien/3.jpg")
    for method in inference.CAM_METHODS:
        prediction = classifier.predict(image, method)
        scores, cam = prediction.confidences, prediction.cam
        assert set(scores) == {"alien", "predator"} and abs(sum(scores.values()) - 1) < 1e-4
        assert cam.ndim == 2 and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
        blended = inference.overlay(image, cam, 0.5)
        assert blended.size == image.size and blended.mode == "RGB"


def test_compare_gives_one_captioned_heatmap_per_method_from_one_pass(trained_model, monkeypatch):
    """The page's "Compare all methods" (it once called a method the ONNX classifier no longer had)."""
    classifier = inference.Classifier(trained_model[2])
    image = _validation("predator/3.jpg")
    passes = []
    forward = classifier.forward
    monkeypatch.setattr(classifier, "forward", lambda pixels: passes.append(1) or forward(pixels))
    shown = inference.compare(image, 0.5, classifier)
    assert [method for _, method in shown] == list(inference.CAM_METHODS) and len(passes) == 1
    alone = {m: classifier.predict(image, m).cam for m in inference.CAM_METHODS}
    for heatmap, method in shown:
        assert heatmap.size == image.size
        assert np.array_equal(np.asarray(heatmap), np.asarray(inference.overlay(image, alone[method], 0.5)))
    assert len({np.asarray(h).tobytes() for h, _ in shown}) >= 3  # CAM = Grad-CAM for a linear head; the rest differ


def test_overlay_colours_are_matplotlibs_jet():
    from matplotlib import colormaps

    reference = np.round(colormaps["jet"](np.arange(256) / 255)[:, :3] * 255)
    assert np.abs(np.array(inference.JET_PALETTE).reshape(256, 3) - reference).max() <= 1
    image = Image.new("RGB", (40, 30), "white")
    hot = inference.overlay(image, np.ones((7, 7)), opacity=1.0)  # the hottest CAM is jet's dark red
    assert hot.size == (40, 30) and hot.getpixel((20, 15)) == tuple(int(v) for v in reference[255])


@pytest.mark.parametrize("method", ["Grad-CAM", "Grad-CAM++", "Layer-CAM"])
def test_gradient_cams_match_pytorch_grad_cam(method, trained_model):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class HeadOnly(torch.nn.Module):  # the library's way: a module whose target layer is the feature map
        def __init__(self, model):
            super().__init__()
            self.model, self.feature_map = model, torch.nn.Identity()

        def forward(self, features):
            return self.model.forward_head(self.feature_map(features))

    from training.pipeline.export.torch_classifier import TorchClassifier

    classifier = TorchClassifier(trained_model[2])  # the timm model, for the library to differentiate
    _, _, feature_map = classifier.forward(classifier.transform(_validation("predator/3.jpg"))[None])
    library = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "Layer-CAM": LayerCAM}[method]
    head = HeadOnly(classifier.model)
    for target in (0, 1):
        with library(model=head, target_layers=[head.feature_map]) as cam:
            expected = cam(input_tensor=torch.from_numpy(feature_map).requires_grad_(True),
                           targets=[ClassifierOutputTarget(target)])[0]
        assert np.allclose(classifier.cam(feature_map[0], target, method), expected, atol=2e-3)


def test_classic_cam_matches_grad_cam_for_a_linear_head(trained_model):
    # For global average pooling + a linear layer, Grad-CAM's weights are the head's weights / (h*w).
    classifier = inference.Classifier(trained_model[2])
    _, _, feature_map = classifier.forward(classifier.transform(_validation("predator/3.jpg"))[None])
    assert np.allclose(classifier.cam(feature_map[0], 1, "CAM"), classifier.cam(feature_map[0], 1, "Grad-CAM"),
                       atol=1e-5)


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **{"format": "PNG", **kwargs})
    return buffer.getvalue()


def bad_uploads(tmp_path) -> dict:
    """name -> (file bytes or None, the message the user must get)."""
    jpeg = (DATA_DIR / "validation" / "alien" / "3.jpg").read_bytes()
    return {
        "empty.jpg": (b"", "empty (0 bytes)"),
        "notes.jpg": (b"just some text, not a picture\n" * 5, "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "damaged or truncated"),
        "bomb.png": (_png(Image.new("L", (9000, 9000))), "megapixels"),
        "huge.png": (_png(Image.new("1", (12000, 12000))), "too many pixels"),
        "one.png": (_png(Image.new("RGB", (1, 1))), "too small"),
        "thin.png": (_png(Image.new("RGB", (20000, 1))), "too thin"),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        "big.jpg": (os.urandom(11 * 1024 * 1024), "limit is 10 MB"),
    }


def test_bad_uploads_get_specific_messages(tmp_path):
    for name, (data, message) in bad_uploads(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(image_io.BadImage, match=re.escape(message)):
            image_io.load_upload(path)
    with pytest.raises(image_io.BadImage, match="No image"):
        image_io.load_upload(None)


@pytest.mark.parametrize("kind", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "gif", "webp", "bmp", "tiff", "exif"])
def test_unusual_but_valid_uploads(kind, tmp_path):
    base = Image.open(DATA_DIR / "validation" / "predator" / "3.jpg").convert("RGB")
    path = tmp_path / f"x.{kind.replace(';', '')}"
    if kind == "gif":
        frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    elif kind in ("webp", "bmp", "tiff"):
        base.save(path, format=kind.upper())
    elif kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6
        base.save(path, format="JPEG", exif=exif)
    elif kind == "I;16":
        Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 200).save(path, format="PNG")
    else:
        base.convert(kind).save(path, format="TIFF" if kind == "CMYK" else "PNG")
    image = image_io.load_upload(path)
    assert image.mode == "RGB"
    assert image.size == ((base.height, base.width) if kind == "exif" else base.size)


def test_big_jpeg_is_decoded_small_and_cheaply(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (90, 20, 20)).save(path, quality=70)
    image = image_io.load_upload(path)
    assert max(image.size) <= image_io.WORK_SIDE


def test_a_huge_progressive_jpeg_is_refused_before_decoding_and_16_bit_is_made_small_first(tmp_path):
    progressive = tmp_path / "progressive.jpg"
    Image.new("RGB", (6000, 5000), (90, 20, 20)).save(progressive, quality=50, progressive=True)  # 30 MP
    started = time.monotonic()
    with pytest.raises(image_io.BadImage, match="progressive JPEG; the limit is 24 megapixels"):
        image_io.load_upload(progressive)
    assert time.monotonic() - started < 1  # refused from the header: nothing was decoded
    baseline = tmp_path / "baseline.jpg"
    Image.new("RGB", (6000, 5000), (90, 20, 20)).save(baseline, quality=50)
    assert max(image_io.load_upload(baseline).size) <= image_io.WORK_SIDE  # drafted: no full decode to hold
    deep = tmp_path / "deep.png"
    ramp = (np.arange(3000 * 4000, dtype=np.uint32).reshape(3000, 4000) % 60000 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(deep)
    image = image_io.load_upload(deep)
    # rescaled over the whole picture's range (as a viewer shows it), then made small
    whole = image_io.to_rgb(Image.fromarray(ramp)).resize(image.size, Image.Resampling.BILINEAR)
    assert image.mode == "RGB" and max(image.size) == image_io.WORK_SIDE
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(whole, np.int16))
    assert np.median(difference) <= 3 and difference.mean() < 5  # box-averaged first; apart at the sharp wraps


def test_full_decodes_are_capped_by_their_bytes_and_never_copied_at_full_size(tmp_path):
    rgb, deep, grey = (image_io.max_pixels("PNG", mode) for mode in ("RGB", "I;16", "L"))
    assert rgb * 2 == deep and grey == min(image_io.MAX_PIXELS, rgb * 4)
    assert image_io.max_pixels("WEBP", "RGB") == rgb // 4  # libwebp's frame and a bytes copy beside Pillow's
    side = math.isqrt(rgb) + 1
    over = tmp_path / "over.png"
    Image.new("RGB", (side, side), (10, 20, 30)).save(over)
    with pytest.raises(image_io.BadImage, match=r"limit for a PNG like this one is .* megapixels"):
        image_io.load_upload(over)
    webp = tmp_path / "big.webp"
    Image.new("RGB", (2000, 1500), (10, 20, 30)).save(webp)  # 3 MP: over WebP's limit, under PNG's
    with pytest.raises(image_io.BadImage, match="limit for a WEBP"):
        image_io.load_upload(webp)
    y, x = np.mgrid[0:2100, 0:3100]
    pixels = np.stack([x % 256, y % 256, (x // 7) % 256, 128 + (y % 128)], -1).astype(np.uint8)
    translucent = Image.fromarray(pixels, "RGBA")  # converted in bands of rows, box-averaged, then resized
    banded = image_io.working_rgb(translucent)
    whole = image_io.to_rgb(translucent).resize(banded.size, Image.Resampling.BILINEAR)
    difference = np.abs(np.asarray(banded, np.int16) - np.asarray(whole, np.int16))
    assert banded.size[0] == image_io.WORK_SIDE and abs(banded.size[1] - 2100 * 1024 / 3100) < 1
    assert difference.mean() < 2  # no seam between bands


def test_a_jpeg_is_drafted_in_its_own_shape():
    path = io.BytesIO()
    Image.new("CMYK", (6000, 4000), (0, 50, 50, 0)).save(path, format="JPEG", quality=30)
    image = Image.open(path)
    image.draft("RGB", image_io.draft_box(*image.size))
    assert image.size == (1500, 1000)  # 1/4: a square box would have kept 3000 x 2000


def test_pillows_bomb_warning_is_an_error_once_the_server_sets_its_limits(tmp_path):
    image_io.limit_pillow()
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(Image.new("L", (9000, 9000))))  # 81 MP: between Pillow's warning and its error
    with pytest.raises(image_io.BadImage, match="decompression bomb"):
        image_io.load_upload(path)


def _correct_examples(trained_model, n: int):
    """Validation files the test model gets right and is sure of (not "unsure" or "neither")."""
    classifier = inference.Classifier(trained_model[2])
    files = [f"validation/{c}/{i}.jpg" for i in range(3, 40) for c in ("alien", "predator")]
    answers = {f: classifier.predict(_validation(f.removeprefix("validation/")), None) for f in files}
    return [f for f in files if answers[f].label == f.split("/")[1] and answers[f].verdict == "sure"][:n]


def test_app_end_to_end_with_bad_inputs(app_url, trained_model, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    for file in _correct_examples(trained_model, 4):
        label, heatmap = client.predict(handle_file(str(DATA_DIR / file)),
                                        "Grad-CAM", 0.5, api_name="/predict")
        assert label["label"] == file.split("/")[1]
        assert Image.open(heatmap).size == Image.open(DATA_DIR / file).size  # the image's own resolution
    shown = client.predict(handle_file(str(DATA_DIR / file)), 0.5, api_name="/compare")
    assert [item["caption"] for item in shown] == list(inference.CAM_METHODS)
    assert all(Image.open(item["image"]).size == Image.open(DATA_DIR / file).size for item in shown)
    good = handle_file(str(DATA_DIR / "validation" / "alien" / "3.jpg"))
    for name, (data, message) in bad_uploads(tmp_path).items():
        if name == "big.jpg":
            message = "exceeds the maximum"  # refused by Gradio's max_file_size before the app sees it
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), "CAM", 0.5, api_name="/predict")
        assert message.lower() in str(info.value).lower(), (name, str(info.value))
        label, _ = client.predict(good, "CAM", 0.5, api_name="/predict")  # the server keeps serving
        assert label["label"] in ("alien", "predator", "Neither an alien nor a predator") or \
            label["label"].startswith("Not sure: looks most like a")


def test_twenty_clients_ten_requests_each(app_url, trained_model, tmp_path):
    from gradio_client import Client, handle_file

    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(Image.new("1", (12000, 12000))))
    good = str(DATA_DIR / "validation" / "predator" / "3.jpg")
    failures, lock = [], threading.Lock()

    def client_session(k: int) -> None:
        client = Client(app_url, verbose=False)
        for i in range(10):
            huge_one = (k * 10 + i) % 10 == 9
            try:
                label, _ = client.predict(handle_file(str(huge) if huge_one else good), "CAM", 0.5,
                                          api_name="/predict")
                ok = not huge_one and (label["label"] in ("alien", "predator", "Neither an alien nor a predator")
                                       or label["label"].startswith("Not sure: looks most like a"))
            except Exception as e:
                ok = huge_one and "too many pixels" in str(e)
            if not ok:
                with lock:
                    failures.append((k, i))

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(client_session, range(20)))
    assert failures == [] and time.monotonic() - started < 600


def test_published_space_runs_from_a_snapshot(trained_model, hub_dataset, tmp_path):
    from gradio_client import Client, handle_file
    from huggingface_hub import snapshot_download

    from training.publish_space import SpaceArguments, publish_space

    publish_space(SpaceArguments(space_id="demo/avp-space-test", model_id=trained_model[2], dataset_id=hub_dataset))
    folder = snapshot_download("demo/avp-space-test", repo_type="space", local_dir=tmp_path / "space")
    assert sorted(os.listdir(folder + "/examples"))  # examples were copied in
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MODEL_ID"}  # the Space finds its model in README.md
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HOME=str(tmp_path / "hf"))
    process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        client = None
        deadline = time.monotonic() + 180
        while client is None and time.monotonic() < deadline and process.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                time.sleep(1)
        assert client is not None, process.stderr.read().decode()[-3000:] if process.poll() is not None else ""
        file = _correct_examples(trained_model, 1)[0]
        label, _ = client.predict(handle_file(str(DATA_DIR / file)), "CAM", 0.5,
                                  api_name="/predict")
        assert label["label"] == file.split("/")[1]
        loaded = Path(f"/proc/{process.pid}/maps").read_text()  # every shared library the Space's process mapped
        assert "onnxruntime" in loaded and "libtorch" not in loaded and "/torch/" not in loaded
    finally:
        process.terminate()
        process.wait(timeout=20)


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed (make test installs them via apt)")
def test_real_browser_uploads_an_example_and_sees_label_and_heatmap(app_url, trained_model, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 90)
        upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        file = _correct_examples(trained_model, 1)[0]
        upload.send_keys(str(DATA_DIR / file))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.primary"))
        driver.find_element(By.XPATH, "//button[normalize-space()='Classify']").click()
        expected = file.split("/")[1]
        # gr.Label shows the top class as its headline
        wait.until(lambda d: expected in [e.text.strip() for e in d.find_elements(By.TAG_NAME, "h2")])
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img[src*='file=']")) +
                   len(d.find_elements(By.CSS_SELECTOR, "img[src*='/file']")) >= 2)
        shot = tmp_path / "space.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert expected in driver.find_element(By.TAG_NAME, "body").text
        (ROOT / "outputs").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "outputs" / "space_screenshot.png")  # for a person to look at
    finally:
        driver.quit()


def test_every_event_the_page_wires_is_called_by_a_test(app_url):
    """Each endpoint of build_demo is called by name somewhere in the suite (a button nobody pressed broke once)."""
    from gradio_client import Client

    endpoints = set(Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict", "/compare", "/classify", "/feedback"} <= endpoints
    suite = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_space.py")
    suite += Path(__file__).read_text().split("def test_every_event_the_page_wires")[0]
    assert [e for e in sorted(endpoints) if f'api_name="{e}"' not in suite] == []


def test_the_catch_all_hides_the_traceback_from_visitors_but_records_it():
    import gradio as gr

    from space import app

    before = len(app.unexpected)
    with pytest.raises(gr.Error) as info, app.user_errors("comparison"):
        raise AttributeError("'Classifier' object has no attribute 'features'")
    assert "could not process this image" in str(info.value) and "features" not in str(info.value)
    assert app.unexpected[before:] == ["comparison: AttributeError: 'Classifier' object has no attribute 'features'"]
    app.unexpected[before:] = []


@pytest.mark.slow
def test_importing_the_space_changes_no_global_state():
    """Only the Space's own process (its app.py, space/launcher.py) keeps triton out; an import of the package
    changes nothing: no environment, no Pillow limit, no temporary folder."""
    code = ("import os, sys, tempfile, glob; from PIL import Image; before = dict(os.environ); "
            "pixels = Image.MAX_IMAGE_PIXELS; temps = set(glob.glob(tempfile.gettempdir() + '/avp-space-*')); "
            "from space import app, inference, ood, feedback; "
            "assert sys.modules.get('triton', 'absent') is not None, 'triton blocked by an import'; "
            "assert dict(os.environ) == before, 'environment changed'; "
            "assert Image.MAX_IMAGE_PIXELS == pixels, 'Pillow limit changed'; "
            "assert set(glob.glob(tempfile.gettempdir() + '/avp-space-*')) == temps, 'temporary folder made'; "
            "import training.pipeline.data.corrections as c; assert c.NEITHER is ood.NEITHER; "
            "assert 'ood' not in sys.modules and 'inference' not in sys.modules, 'a second module object'; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
