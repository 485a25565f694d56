"""The browser page (``web/``) as a static Space: the model runs in the visitor's browser, loaded from the Hub.

The Space holds the page, onnxruntime-web's script and WebAssembly, and ``model.json`` naming the model repo,
the commit it was published for and the Hub endpoint; the page fetches the model's files from the Hub's
``resolve`` URLs (which allow any origin). A merged retrain publishes it again for the new commit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard, constants

from ..errors import UserError, hub_errors

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
PAGE_FILES = ("index.html", "classify.js")
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"
# The WebAssembly-only build of onnxruntime-web and what it loads (the full build also fetches its WebGPU one).
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CARD = """---
title: {title_yaml}
emoji: 🔎
colorFrom: green
colorTo: gray
sdk: static
app_file: index.html
models:
- {model_id}
short_description: {short_yaml}
---

# {title}

The model [{model_id}]({endpoint}/{model_id}) (commit `{revision}`) in your browser with onnxruntime-web: the
picture never leaves the page. It answers as the Gradio Space does: a class with calibrated probabilities, "not
sure", or "neither" when the picture is unlike the training images, with a class activation map.
"""


def publish_static_space(space_id: str, model_id: str, title: str, private: bool = False) -> str:
    """Publish the page for ``model_id`` at its current ``main`` commit; returns the commit URL."""
    missing = [name for name in ORT_FILES if not (WEB_DIR / ORT_DIST / name).is_file()]
    if missing:
        raise UserError(f"{WEB_DIR / ORT_DIST} has no {', '.join(missing)}: run `make web` (npm ci in web/) first")
    api = HfApi()
    with hub_errors(f"reading model {model_id}"):
        revision = api.model_info(model_id).sha
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
    with hub_errors(f"publishing static Space {space_id}"), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in PAGE_FILES:
            shutil.copy(WEB_DIR / name, folder / name)
        (folder / ORT_DIST).mkdir(parents=True)
        for name in ORT_FILES:
            shutil.copy(WEB_DIR / ORT_DIST / name, folder / ORT_DIST / name)
        (folder / "model.json").write_text(json.dumps({"model_id": model_id, "revision": revision,
                                                       "endpoint": endpoint}))
        card = CARD.format(title=title, title_yaml=json.dumps(title[:60]), model_id=model_id, revision=revision[:12],
                           endpoint=endpoint, short_yaml=json.dumps("The classifier in your browser — or neither"))
        SpaceCard(card).save(folder / "README.md")
        api.create_repo(space_id, repo_type="space", space_sdk="static", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=folder,
                                 commit_message=f"Browser page for {model_id} at {revision[:12]}")
    return info.commit_url
