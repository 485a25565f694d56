"""Peak memory of a real Space process: the Space's app with its Gradio server up and ResNet50 loaded,
every CAM method and the comparison run once on a real image.

    python -m bench.space_process

Run it in a fresh process (``bench.inference`` does): the figure is the whole process's peak RSS.
"""

from __future__ import annotations

import sys

from bench.common import SHARED
from training.pipeline.runinfo import peak_rss_mib

sys.modules.setdefault("triton", None)  # what the Space's app.py (space/launcher.py) does first
from space import app, inference  # noqa: E402 - the Space's own imports are part of what is measured


def main() -> None:
    import timm

    inference._classifier = inference.Classifier(timm.create_model("resnet50", pretrained=False, num_classes=2))
    demo = app.build_demo()
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    path = str(SHARED / "data" / "alien-vs-predator" / "validation" / "alien" / "3.jpg")
    labels = [app.predict(path, method)[0]["label"] for method in inference.CAM_METHODS]
    gallery = app.compare(path)
    demo.close()
    heavy = sorted(m for m in ("triton", "pytorch_grad_cam", "matplotlib", "cv2", "sklearn") if sys.modules.get(m))
    print(f"labels {labels}; gallery {len(gallery)} images; heavy modules loaded: {heavy or 'none'}")
    print(f"peak RSS of the Space process (Gradio up, ResNet50 @224 fp32, every CAM method once): "
          f"{peak_rss_mib()} MiB")


if __name__ == "__main__":
    main()
