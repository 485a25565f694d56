"""The Gradio Space. Thin: the work is in image_io.py and inference.py (predict, classify)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import signal
import tempfile

import gradio as gr

from . import inference
from .feedback import NEITHER, FeedbackRefused, FeedbackStore, configured_dataset, storage_folder
from .image_io import MAX_FILE_BYTES, BadImage, limit_pillow, load_upload
from .inference import CAM_METHODS, SPACE_ROOT, get_classifier
from .texts import class_list, page_title

logger = logging.getLogger("avp-space")
KEEP_OUTPUTS = 256
_output_dir: str | None = None


def output_dir() -> str:
    """The folder for output images, made on first use (importing the app makes none)."""
    global _output_dir
    if _output_dir is None:
        _output_dir = tempfile.mkdtemp(prefix="avp-space-outputs-")
    return _output_dir


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


def verdict_label(**kwargs) -> gr.Label:
    """A gr.Label whose headline can differ from the top class ("Neither ..."), bars still showing every class.

    Takes ``{"label": text, "confidences": {class: p}}``; set on the instance, as upload_input does.
    """
    component = gr.Label(**kwargs)
    default = component.postprocess

    def postprocess(value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), dict):
            data = default(value["confidences"])
            data.label = value["label"]
            return data
        return default(value)

    component.postprocess = postprocess
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
    folder = output_dir()
    path = os.path.join(folder, hashlib.sha256(data.getvalue()).hexdigest()[:32] + ".png")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data.getvalue())
        os.replace(tmp, path)
    for old in sorted(glob.glob(os.path.join(folder, "*.png")), key=os.path.getmtime)[:-KEEP_OUTPUTS]:
        with contextlib.suppress(OSError):
            os.unlink(old)
    return path


UNEXPECTED_KEPT = 100
unexpected: list[str] = []  # what the catch-all hid from visitors (newest last): the tests fail on any


@contextlib.contextmanager
def user_errors(what: str):
    """A bad upload gets its own message; anything else a generic one (never a traceback), the log the details
    and ``unexpected`` a line, so that a broken control fails the tests instead of hiding behind the message."""
    try:
        yield
    except (BadImage, FeedbackRefused) as e:
        raise gr.Error(str(e), print_exception=False) from None
    except gr.Error:
        raise
    except Exception as e:
        logger.exception("%s failed", what)
        unexpected[:] = [*unexpected[-UNEXPECTED_KEPT + 1:], f"{what}: {type(e).__name__}: {e}"]
        raise gr.Error("The model could not process this image; try another picture.") from None


def predict(path: str | None, method: str | None = None, opacity: float = 0.5,
            classifier: inference.Classifier | None = None):
    """The page: verdict and calibrated confidences, and a CAM heatmap blended over the picture."""
    with user_errors("prediction"):
        verdict, heatmap = inference.predict(load_upload(path), method, opacity, classifier)
        return verdict, as_file(heatmap)


def classify(path: str | None, classifier: inference.Classifier | None = None) -> dict:
    """The API: label or "neither", calibrated confidences, OOD score and threshold, model id and revision."""
    with user_errors("classification"):
        return inference.classify(load_upload(path), classifier)


def compare(path: str | None, opacity: float = 0.5, classifier: inference.Classifier | None = None):
    """The same picture under every CAM method, side by side."""
    with user_errors("comparison"):
        pairs = inference.compare(load_upload(path), opacity, classifier)
        return [(as_file(heatmap), method) for heatmap, method in pairs]


PRIVACY = ("What is kept when you send a correction: the picture, your answer, the model's answer and "
           "confidence, the model revision and the time. Nothing else about you. The dataset is private.")


def feedback_store(classifier: inference.Classifier) -> FeedbackStore | None:
    """The store for corrections when this Space is configured for them and has a write token, else None."""
    dataset_id, token = configured_dataset(SPACE_ROOT), os.environ.get("HF_TOKEN")
    if not dataset_id or not token:
        return None
    return FeedbackStore(dataset_id, classifier.labels, token, storage_folder(SPACE_ROOT),
                         training_datasets=inference.space_datasets())


def client_key(request: gr.Request | None) -> str:
    """Who the limit counts: behind a proxy (Spaces), the address it appended last to X-Forwarded-For (the
    hops before it are whatever the client wrote); with no proxy, the peer's own address."""
    if request is None:
        return "?"
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[-1].strip()
    return forwarded or (request.client.host if request.client else "?")


def send_feedback(store: FeedbackStore | None, path: str | None, label: str | None, client: str,
                  classifier: inference.Classifier | None = None) -> str:
    """One correction: the answer and the limits first, then the picture, checked like any upload and stored
    with the model's own answer."""
    if store is None:
        raise gr.Error("This Space does not collect corrections (no feedback dataset or no write token is "
                       "configured).", print_exception=False)
    with user_errors("feedback"):
        store.admit(label, client)
        image = load_upload(path)
        answer = inference.classify(image, classifier)
        return store.add(image, label, answer["label"], max(answer["confidences"].values()),
                         answer["model"]["revision"])


def about(classifier: inference.Classifier) -> str:
    """What the model can and cannot tell, in plain words, from the model itself."""
    classes = class_list(classifier.labels)
    if classifier.ood:
        neither = ("When a picture is unlike the training images it says it is not sure, and when it looks unlike "
                   f'all of them it answers "{inference.neither_text(classifier.labels)}" (the probabilities and '
                   "the heatmap are still shown, for what they are worth).")
    else:
        neither = "This model has no \"neither\" answer: any picture is forced into one of the classes."
    return (f"The model tells {classes} apart. {neither} Probabilities are calibrated on held-out training "
            "images; the heatmap shows where the model looked. It has seen only the training pictures: "
            f"unusual styles may be misread. Model: `{classifier.model_id or 'in memory'}` "
            f"(revision `{(classifier.revision or '')[:12]}`).")


def page_text(labels: list[str]) -> dict:
    """Title and description from ``space.json`` (written when the Space was published), else from the labels."""
    path = os.path.join(SPACE_ROOT, "space.json")
    saved = json.loads(open(path, encoding="utf-8").read()) if os.path.isfile(path) else {}
    return {"title": saved.get("title") or page_title(labels), "description": saved.get("description")}


def build_demo(classifier: inference.Classifier) -> gr.Blocks:
    """The page and its API for ``classifier`` (``main`` passes the Space's model; tests pass their own)."""
    limit_pillow()  # the server's one global set-up: Pillow refuses absurd images at open
    examples_dir = os.path.join(SPACE_ROOT, "examples")
    examples = sorted(os.path.join(examples_dir, f) for f in os.listdir(examples_dir)) \
        if os.path.isdir(examples_dir) else []
    text = page_text(classifier.labels)
    with gr.Blocks(title=text["title"], delete_cache=(60, 600)) as demo:
        gr.Markdown(f"# {text['title']}\n{text['description'] or ''}\n\nUpload a picture: the model says what it "
                    f"shows, how sure it is and — in the heatmap — where it looked.\n\n{about(classifier)}")
        with gr.Row():
            with gr.Column():
                image = upload_input(label="Picture", sources=["upload", "clipboard"])
                method = gr.Radio(list(CAM_METHODS), value=classifier.cam_method, label="Heatmap method")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                with gr.Row():
                    run = gr.Button("Classify", variant="primary")
                    run_all = gr.Button("Compare all methods")
            with gr.Column():
                label = verdict_label(num_top_classes=min(len(classifier.labels), 5), label="Prediction")
                heatmap = gr.Image(type="filepath", label="Where the model looked", format="png")
        gallery = gr.Gallery(label="All CAM methods", columns=len(CAM_METHODS), height="auto")
        if examples:
            gr.Examples(examples, inputs=image, label="Validation images (including any the model gets wrong)")
        store = feedback_store(classifier)
        taking = store is not None and not store.off_reason
        with gr.Accordion("Wrong? Tell us the right answer", open=False, visible=store is not None):
            gr.Markdown(PRIVACY if taking else (store.off_reason if store else ""))
            right = gr.Radio([*classifier.labels, NEITHER], label="The right answer", visible=taking)
            send = gr.Button("Send correction", visible=taking)
            thanks = gr.Markdown()
        answer = gr.JSON(visible=False)
        # Every event decodes a picture: one queue for all of them, DECODING at a time (memory is per decode).
        decoding = {"concurrency_id": "decode", "concurrency_limit": DECODING}
        run.click(lambda path, method, opacity: predict(path, method, opacity, classifier),
                  [image, method, opacity], [label, heatmap], api_name="predict", **decoding)
        run_all.click(lambda path, opacity: compare(path, opacity, classifier), [image, opacity], gallery,
                      api_name="compare", **decoding)
        gr.Button(visible=False).click(lambda path: classify(path, classifier), [image], answer,  # API only
                                       api_name="classify", **decoding)

        def feedback(path: str | None, label: str | None, request: gr.Request) -> str:
            return send_feedback(store, path, label, client_key(request), classifier)

        send.click(feedback, [image, right], thanks, api_name="feedback", **decoding)
    demo.feedback_store = store  # for shutdown and tests
    demo.queue(max_size=512)  # requests wait in line instead of failing
    return demo


DECODING = 2


def interrupt(*_) -> None:
    """SIGTERM as Ctrl-C: Gradio's launch then closes the server and returns."""
    raise KeyboardInterrupt


def main() -> None:
    demo = build_demo(get_classifier())  # the model loads once, at start-up
    # A restart (SIGTERM, as every Space restart sends) or Ctrl-C stops the server; the corrections on disk are
    # pushed on the way out, and whatever the Hub does not take waits on disk for the next start.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                    server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                    max_file_size=MAX_FILE_BYTES, show_error=True)
    finally:
        if demo.feedback_store is not None:
            demo.feedback_store.stop()


if __name__ == "__main__":
    main()
