"""Alien vs. Predator — the Gradio Space. Thin: the work is in image_io.py and inference.py."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import logging
import os
import tempfile

import gradio as gr
from image_io import MAX_FILE_BYTES, BadImage, load_upload
from inference import CAM_METHODS, get_classifier, model_id, overlay

logger = logging.getLogger("avp-space")
HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT_DIR = tempfile.mkdtemp(prefix="avp-space-outputs-")
KEEP_OUTPUTS = 256


def upload_input(**kwargs) -> gr.Image:
    """A gr.Image that hands the uploaded file's path on untouched, so that decoding (and its clear
    error messages) happens in image_io rather than in Gradio's own, detail-less preprocessing.

    The override is on the instance: a subclass would make Gradio look for a custom frontend.
    """
    component = gr.Image(type="filepath", **kwargs)
    default = component.preprocess

    def preprocess(payload):
        if payload is None or (payload.url and payload.url.startswith("data:")):
            return default(payload)
        return payload.path

    component.preprocess = preprocess
    return component


def as_file(image) -> str:
    """Write an output image to a file, atomically, for Gradio to serve.

    Returned as a PIL image, Gradio writes it to a cache path named by its bytes, in place: two
    requests with the same output (say, the same example clicked twice at once) then rewrite the
    file while it is being sent ("Too little data for declared Content-Length"). Gradio copies a
    returned *file* atomically; this folder keeps only the most recent outputs.
    """
    data = io.BytesIO()
    image.save(data, format="PNG")
    path = os.path.join(OUTPUT_DIR, hashlib.sha256(data.getvalue()).hexdigest()[:32] + ".png")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=OUTPUT_DIR, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data.getvalue())
        os.replace(tmp, path)
    for old in sorted(glob.glob(os.path.join(OUTPUT_DIR, "*.png")), key=os.path.getmtime)[:-KEEP_OUTPUTS]:
        with contextlib.suppress(OSError):
            os.unlink(old)
    return path


def classify(path: str | None, method: str = "CAM", opacity: float = 0.5):
    """Label confidences and a CAM heatmap blended over the picture."""
    try:
        image = load_upload(path)
        scores, cam = get_classifier().predict(image, method)
        return scores, as_file(overlay(image, cam, opacity))
    except BadImage as e:
        raise gr.Error(str(e), print_exception=False) from None
    except Exception:  # never a traceback for the user; the log keeps it
        logger.exception("prediction failed")
        raise gr.Error("The model could not process this image; try another picture.") from None


def compare(path: str | None, opacity: float = 0.5):
    """The same picture under every CAM method, side by side."""
    try:
        image = load_upload(path)
        classifier = get_classifier()
        features = classifier.features(image)
        scores, _ = classifier.predict(image, None)
        target = classifier.labels.index(max(scores, key=scores.get))
        return [(as_file(overlay(image, classifier.cam(features, target, m), opacity)), m) for m in CAM_METHODS]
    except BadImage as e:
        raise gr.Error(str(e), print_exception=False) from None
    except Exception:
        logger.exception("comparison failed")
        raise gr.Error("The model could not process this image; try another picture.") from None


def build_demo() -> gr.Blocks:
    examples_dir = os.path.join(HERE, "examples")
    examples = sorted(os.path.join(examples_dir, f) for f in os.listdir(examples_dir)) \
        if os.path.isdir(examples_dir) else []
    with gr.Blocks(title="Alien vs. Predator", delete_cache=(60, 600)) as demo:
        gr.Markdown("# 👽 Alien vs. Predator\nUpload a picture: the model says which creature it shows, how sure "
                    "it is, and — in the heatmap — where it looked. Model: "
                    f"`{model_id()}`.")
        with gr.Row():
            with gr.Column():
                image = upload_input(label="Picture", sources=["upload", "clipboard"])
                method = gr.Radio(list(CAM_METHODS), value="CAM", label="Heatmap method")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                with gr.Row():
                    run = gr.Button("Classify", variant="primary")
                    run_all = gr.Button("Compare all methods")
            with gr.Column():
                label = gr.Label(num_top_classes=2, label="Prediction")
                heatmap = gr.Image(type="filepath", label="Where the model looked", format="png")
        gallery = gr.Gallery(label="All CAM methods", columns=len(CAM_METHODS), height="auto")
        if examples:
            gr.Examples(examples, inputs=image, label="Validation images (including any the model gets wrong)")
        run.click(classify, [image, method, opacity], [label, heatmap], api_name="predict")
        run_all.click(compare, [image, opacity], gallery, api_name="compare")
    # Requests queue up (and wait) instead of failing; one runs at a time on 2 cores.
    demo.queue(default_concurrency_limit=1, max_size=512)
    return demo


def main() -> None:
    get_classifier()  # load the model once, at start-up
    build_demo().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        max_file_size=MAX_FILE_BYTES, show_error=True)


if __name__ == "__main__":
    main()
