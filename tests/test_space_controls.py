"""Every control of the published Space pressed in chromium, as a visitor would: each example, Classify with each
heatmap method at two opacities, Compare all methods, and a correction with a class and with "neither". Any error
message, empty output or exception in the server's log fails the test."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from huggingface_hub import snapshot_download

from localhub.ctl import free_port
from space.inference import CAM_METHODS
from tests.test_corrections_kept import stored_rows

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are "
                                "not installed (make test installs them via apt)")


@pytest.fixture(scope="module")
def served_space(trained_model, hub_dataset, tmp_path_factory):
    """The Space as published by training.publish_space (examples, feedback on), served from its snapshot."""
    from training.publish_space import SpaceArguments, publish_space

    publish_space(SpaceArguments("demo/avp-controls", trained_model[2], hub_dataset,
                                 feedback_dataset="demo/avp-controls-feedback"))
    tmp = tmp_path_factory.mktemp("controls")
    folder = snapshot_download("demo/avp-controls", repo_type="space", local_dir=tmp / "space")
    port, log = free_port(), tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "FEEDBACK_DATASET")}
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HOME=str(tmp / "hf"),
               FEEDBACK_DIR=str(tmp / "feedback"), FEEDBACK_FLUSH_SECONDS="1")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 180
    import httpx

    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    assert process.poll() is None, log.read_text()[-3000:]
    yield f"http://127.0.0.1:{port}/", log
    process.terminate()
    process.wait(timeout=30)


def test_every_control_of_the_space_works_in_chromium(served_space, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = served_space
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 90)

    def errors() -> list[str]:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body'], .toast-body")
                if e.text.strip()]

    def block(title: str) -> str:
        return f"//*[@data-testid='block-label' and contains(., '{title}')]/ancestor::*[contains(@class,'block')][1]"

    def heatmap() -> str | None:
        found = driver.find_elements(By.XPATH, block("Where the model looked") + "//img")
        return found[0].get_attribute("src") if found else None

    def headline() -> str:
        found = driver.find_elements(By.CSS_SELECTOR, "[data-testid='label-output-value'] h2, .output-class")
        return found[0].text.strip() if found else ""

    def press(text: str) -> None:
        driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()

    try:
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".gallery-item"))
        count = len(driver.find_elements(By.CSS_SELECTOR, ".gallery-item"))
        assert count >= 2  # one validation image per class at least
        for i in range(count):  # each example, then Classify
            driver.find_elements(By.CSS_SELECTOR, ".gallery-item")[i].click()
            before = heatmap()
            wait.until(lambda d: d.find_elements(By.XPATH, block("Picture") + "//img"))
            press("Classify")
            wait.until(lambda d, before=before: (heatmap() and heatmap() != before) or errors())
            assert errors() == [] and headline(), (i, errors())
        for method in CAM_METHODS:  # each heatmap method at two opacities
            maps = []
            for opacity in ("0.2", "0.8"):
                driver.find_element(By.CSS_SELECTOR, f"[data-testid='{method}-radio-label']").click()
                box = driver.find_element(By.CSS_SELECTOR, "input[type=number]")
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(opacity, Keys.ENTER)
                before = heatmap()
                press("Classify")
                wait.until(lambda d, before=before: heatmap() != before or errors())
                assert errors() == [] and headline(), (method, opacity, errors())
                maps.append(heatmap())
            assert maps[0] != maps[1], method  # the opacity reached the server
        press("Compare all methods")
        wait.until(lambda d: len(d.find_elements(By.XPATH, block("All CAM methods") + "//img")) >= len(CAM_METHODS)
                   or errors())
        shown = driver.find_element(By.XPATH, block("All CAM methods")).text
        assert errors() == [] and all(method in shown for method in CAM_METHODS), (shown, errors())
        driver.find_element(By.XPATH, "//button[contains(., 'Wrong? Tell us the right answer')]").click()
        for answer in ("predator", "neither"):  # a class, then "neither"
            choice = f"[data-testid='{answer}-radio-label']"
            wait.until(lambda d, choice=choice: d.find_elements(By.CSS_SELECTOR, choice))
            driver.find_element(By.CSS_SELECTOR, choice).click()
            press("Send correction")
            wait.until(lambda d, answer=answer: f"saved as “{answer}”" in d.find_element(By.TAG_NAME, "body").text
                       or errors())
            assert errors() == [], (answer, errors())
    finally:
        driver.save_screenshot(str(tmp_path / "controls.png"))
        driver.quit()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(stored_rows("demo/avp-controls-feedback")) < 2:
        time.sleep(1)
    assert sorted(row["label"] for row in stored_rows("demo/avp-controls-feedback")) == ["neither", "predator"]
    server = log.read_text()
    assert " failed" not in server and "Traceback" not in server, server[-3000:]
