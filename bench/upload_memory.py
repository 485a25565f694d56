"""The Space's memory under worst-case uploads: idle RSS, then the peak after each, and each answer's time.

    python -m bench.upload_memory

Serves the Space (``space.app``, ONNX Runtime) with a randomly initialised Lite0 exported the way training
exports (no Hub needed: the model is a local folder), then sends uploads built to cost memory: a 100 MP
progressive JPEG, a 59 MP baseline JPEG, a 16-bit PNG, grey and RGBA PNGs, a TIFF and a WebP each at its
format's pixel limit (``space.image_io.max_pixels``), an 81 MP PNG between Pillow's bomb warning and its
error, a 1-bit 144 MP PNG, a 16 MP WebP (over its limit), an animated GIF, a CMYK JPEG and a 16-bit TIFF.
Prints one JSON line per upload (answer or refusal, seconds, the Space's peak RSS so far) and the ratio of
the final peak to the idle RSS (VmHWM / VmRSS of the server process, from /proc).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import ROOT, machine
from space.image_io import max_pixels


def rss_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def uploads(folder: Path) -> dict[str, Path]:
    made = {}

    def save(name: str, image: Image.Image, **options) -> None:
        made[name] = folder / name
        image.save(made[name], **options)

    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    tile = Image.fromarray(noise)
    big = Image.new("RGB", (10_000, 10_000), (90, 30, 30))
    big.paste(tile, (0, 0))
    save("progressive_100mp.jpg", big, quality=30, progressive=True)
    del big
    wide = Image.new("RGB", (9000, 6600), (90, 30, 30))  # 59 MP: under Pillow's limit, drafted to 1/8
    wide.paste(tile, (0, 0))
    save("baseline_59mp.jpg", wide, quality=30)
    del wide
    def at_limit(image_format: str, mode: str) -> int:  # the side of the largest square this format may be
        return math.isqrt(max_pixels(image_format, mode)) - 1

    side = at_limit("PNG", "I;16")
    ramp = (np.arange(side * side, dtype=np.uint32).reshape(side, side) % 60000).astype(np.uint16)
    save(f"deep_{side * side // 10**6}mp.png", Image.fromarray(ramp))
    save("deep_16mp.tiff", Image.fromarray(ramp[:4000, :4000]), compression="tiff_deflate")
    del ramp
    save("bomb_81mp.png", Image.new("L", (9000, 9000)))
    save("onebit_144mp.png", Image.new("1", (12000, 12000)))
    side = at_limit("PNG", "L")
    save(f"grey_{side * side // 10**6}mp.png", Image.new("L", (side, side), 40))
    side = at_limit("PNG", "RGBA")
    save(f"rgba_{side * side // 10**6}mp.png", Image.new("RGBA", (side, side), (20, 90, 20, 128)))
    save(f"tiff_{side * side // 10**6}mp.tiff", Image.new("RGB", (side, side), (20, 90, 20)),
         compression="tiff_deflate")
    save("webp_16mp.webp", Image.new("RGB", (4000, 4000), (20, 20, 90)), quality=30)
    side = at_limit("WEBP", "RGB")
    save(f"webp_{side * side // 10**6}mp.webp", Image.new("RGB", (side, side), (20, 20, 90)), quality=30)
    frames = [Image.new("RGB", (2000, 2000), (i * 20, 0, 0)) for i in range(8)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:])
    save("cmyk.jpg", Image.new("CMYK", (6000, 4000), (0, 50, 50, 0)), quality=30)
    return made


def model_folder(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from training.pipeline.export.onnx_export import export_onnx
    from training.pipeline.features.model import build_model, save_model

    saved = save_model(build_model("tf_efficientnet_lite0", 2, pretrained=False), ["a", "b"], folder)
    export_onnx(saved)
    return saved


def main() -> None:
    from gradio_client import Client, handle_file

    from localhub.ctl import free_port

    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="upload-memory-") as tmp:
        model, made = model_folder(Path(tmp) / "model"), uploads(Path(tmp))
        port = free_port()
        env = {**os.environ, "MODEL_ID": str(model), "GRADIO_SERVER_PORT": str(port),
               "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("FEEDBACK_DATASET", None)
        server = subprocess.Popen([sys.executable, "-c", "from space.app import main; main()"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = None
            while client is None and server.poll() is None:
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                except Exception:
                    time.sleep(1)
            small = Path(tmp) / "small.jpg"
            Image.new("RGB", (640, 480), (50, 50, 50)).save(small)
            client.predict(handle_file(str(small)), api_name="/classify")  # warm: the first answer's allocations
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak so far (start-up) is not an upload's
            idle = rss_mib(server.pid)
            print(json.dumps({"idle_rss_mib": round(idle["VmRSS"], 1)}), flush=True)
            for name, path in made.items():
                started = time.monotonic()
                try:
                    answer = client.predict(handle_file(str(path)), api_name="/classify")["label"]
                except Exception as e:
                    answer = f"refused: {str(e)[:120]}"
                seconds = time.monotonic() - started
                peak = rss_mib(server.pid)["VmHWM"]
                print(json.dumps({"upload": name, "mb": round(path.stat().st_size / 2**20, 2), "answer": answer,
                                  "seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1)}), flush=True)
            peak = rss_mib(server.pid)["VmHWM"]
            print(json.dumps({"idle_rss_mib": round(idle["VmRSS"], 1), "peak_rss_mib": round(peak, 1),
                              "peak_over_idle": round(peak / idle["VmRSS"], 3)}), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
