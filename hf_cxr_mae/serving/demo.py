"""A Gradio research demo: upload an X-ray, see the findings, a heatmap and an MAE reconstruction.

    hf-cxr-mae demo --model DIR_OR_REPO_ID [--mae DIR_OR_REPO_ID]

``app.py`` at the repository root runs the same app unchanged in a Hugging Face Space (it reads
``MODEL_ID`` and ``MAE_ID``). Needs ``pip install 'hf-cxr-mae[demo]'``. Every bad input becomes a
readable message in the page; the app keeps running.
"""

from __future__ import annotations

import logging
import re
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..data.images import DICOM_SUFFIXES, dicom_size, has_dicom_magic, read_xray
from . import Backend

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "**Research demo. Not a medical device: do not use it for diagnosis, triage or any clinical "
    "decision.** Images are processed in memory and not stored."
)
# Larger or stranger uploads are refused with a message, from the header, before decoding:
# decoding them would stall the page, and a thin strip resizes to an empty image.
MAX_PIXELS = 64_000_000
MAX_ASPECT = 10  # long side / short side; chest radiographs are close to square
MAX_BYTES = 200 * 2**20
DEMO_NOTICE = (
    "⚠️ **DEMO model: trained on synthetic images (the built-in DEMO data), not on X-rays.** "
    "Its probabilities say nothing about real findings."
)


FLAG = "⚑"
ONNX_NOTE = (
    "No heatmap: this model runs as an ONNX graph (ONNX Runtime), which gives probabilities "
    "only; Grad-CAM needs the PyTorch checkpoint."
)


class UploadRefused(ValueError):
    """An upload the page will not analyse; the message is shown as it is."""


def header_size(file: Path) -> tuple[int, int]:
    """(width, height) read from the header only: DICOM Rows / Columns, or PIL's lazy open."""
    if file.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(file):
        return dicom_size(file)
    with Image.open(file) as header:
        return header.size


def check_size(name: str, width: int, height: int) -> None:
    """Refuse empty, over-large or extremely elongated images, in words."""
    if width <= 0 or height <= 0:
        raise UploadRefused(f"{name} declares an empty image ({width}x{height} pixels).")
    if width * height > MAX_PIXELS:
        raise UploadRefused(
            f"{name} is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        raise UploadRefused(
            f"{name} is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1; chest X-rays "
            f"are close to square (the limit is {MAX_ASPECT}:1)."
        )


def _card_text(model_id: str | PathLike) -> str | None:
    """The model card (README.md) of a folder or Hub repo, or None when there is none."""
    local = Path(model_id)
    if local.is_dir():
        card = local / "README.md"
        return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(model_id), "README.md")).read_text(encoding="utf-8")
    except Exception:  # offline, no card, private repo: the page just shows no notice
        logger.info("No model card found for %s", model_id)
        return None


def trained_on_demo_data(model_id: str | PathLike) -> bool:
    """Whether the model card's 'training data' row names the built-in DEMO (synthetic) data."""
    card = _card_text(model_id)
    return card is not None and bool(re.search(r"^\|\s*training data\s*\|.*\bDEMO\b", card, re.M))


class Analyzer:
    """Loads the models once; ``analyze`` turns one uploaded file into what the page shows."""

    def __init__(self, model_id: str, mae_id: str | None = None, backend: Backend = "auto") -> None:
        from ..configuration import MASK_RATIO
        from ..processing import data_settings
        from .inference import fast_classifier
        from .predict import is_onnx, load_model

        self.model = load_model(model_id, backend)
        self.onnx = is_onnx(self.model)  # ONNX Runtime: probabilities, no Grad-CAM (no gradients)
        self.settings = data_settings(self.model)
        self.fast = self.model if self.onnx else fast_classifier(self.model)
        self.names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.demo_data = trained_on_demo_data(model_id)
        self.mae = None
        if mae_id:
            from ..modeling import CXRMAEForPreTraining

            self.mae = CXRMAEForPreTraining.from_pretrained(mae_id).eval()
        # The ratio the MAE was trained at (its config), shown unless the page asks for another.
        self.mask_ratio = self.mae.config.mask_ratio if self.mae is not None else MASK_RATIO

    def _read(self, path: str | None) -> Image.Image:
        if not path:
            raise UploadRefused("Upload an image first (PNG, JPEG or DICOM).")
        file = Path(path)
        size = file.stat().st_size
        if size == 0:
            raise UploadRefused(f"{file.name} is empty.")
        if size > MAX_BYTES:
            raise UploadRefused(
                f"{file.name} is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB."
            )
        check_size(file.name, *header_size(file))
        image = read_xray(file)
        check_size(file.name, *image.size)  # in case the header and the pixels disagree
        return image

    def analyze(
        self, path: str | None, mask_ratio: float | None = None
    ) -> tuple[Any, Any, Any, str]:
        """(probabilities, heatmap, reconstruction, status message) for the page; the
        reconstruction masks ``mask_ratio`` of the patches (None: the MAE's own ratio)."""
        from ..data.transforms import create_transform
        from ..figures import heatmap_overlay
        from .gradcam import grad_cam

        try:
            image = self._read(path)
        except Exception as err:
            name = Path(path).name if path else "the upload"
            message = (
                str(err) if isinstance(err, UploadRefused) else f"Could not read {name}: {err}"
            )
            return None, None, None, f"⚠️ {message}"
        pixels = create_transform(self.settings, "eval")(image)[None].expand(
            -1, self.settings.num_channels, -1, -1
        )
        logits = self.fast(pixels)[0]
        probs = (
            logits.softmax(-1)
            if self.model.config.problem_type == "single_label_classification"
            else logits.sigmoid()
        )
        from ..processing import flagged_findings
        from .model_checks import check_finite

        # As predict: a NaN or infinite output (damaged weights) is refused, never shown as a
        # probability nor explained by a heatmap.
        model_name = str(self.model.path) if self.onnx else self.model.name_or_path
        try:
            check_finite(
                logits[None].detach().float().numpy(), probs[None].detach().float().numpy(),
                model_name, self.names, [Path(path).name],
            )  # fmt: skip
        except ValueError as err:
            return None, None, None, f"⚠️ {err}"
        scores = {name: float(p) for name, p in zip(self.names, probs, strict=True)}
        top = max(scores, key=scores.get)
        flagged = flagged_findings(self.model.config, scores)
        if flagged is not None:  # the label shows the mark next to the finding's name
            scores = {(f"{n} {FLAG}" if flagged.get(n) else n): p for n, p in scores.items()}
        if self.onnx:
            heat, heat_note = None, ONNX_NOTE
        else:
            cam = grad_cam(self.model, pixels, self.names.index(top))
            heat = heatmap_overlay(image, cam, self.settings)
            heat_note = f"Heatmap: Grad-CAM for **{top}** (last transformer block)."
        recon = None
        if self.mae is not None:
            recon = self.reconstruction(image, mask_ratio)
        status = f"{heat_note} Image {image.width}x{image.height}."
        if flagged is not None:
            marked = [n for n, f in flagged.items() if f]
            status += f"\n\n{FLAG} flagged (at or above the model's stored operating point): " + (
                ", ".join(marked) if marked else "none"
            )
        if self.demo_data:
            status = f"{DEMO_NOTICE}\n\n{status}"
        return scores, heat, recon, status

    def reconstruction(self, image: Image.Image, mask_ratio: float | None = None) -> Image.Image:
        from ..data.transforms import create_transform
        from ..figures import reconstruction_grid

        self.mae.config.mask_ratio = float(self.mask_ratio if mask_ratio is None else mask_ratio)
        x = create_transform(self.mae.config, "eval")(image)[None].expand(
            -1, self.mae.config.num_channels, -1, -1
        )
        with torch.no_grad():
            return reconstruction_grid(
                self.mae, x, scale=max(1, round(256 / self.mae.config.image_size))
            )


def synthetic_examples(folder: Path, count: int = 2) -> list[str]:
    """Example images for the page: synthetic chest pictures (not patients), written once."""
    import numpy as np

    from ..data.demo import render_chest

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, findings in enumerate([{"Cardiomegaly": True, "Effusion": False, "Nodule": False, "Pneumothorax": False},
                                  {"Cardiomegaly": False, "Effusion": True, "Nodule": True, "Pneumothorax": False}][:count]):  # fmt: skip
        path = folder / f"synthetic_example_{i + 1}.png"
        if not path.exists():
            render_chest(findings, rng, size=512).save(path)
        paths.append(str(path))
    return paths


def build_demo(model_id: str, mae_id: str | None = None, backend: Backend = "auto"):
    """The Gradio Blocks app (``backend``: as ``predict``'s; ONNX shows no heatmap, said so)."""
    import tempfile

    from ..extras import require

    gr = require("gradio", "The demo")

    analyzer = Analyzer(model_id, mae_id, backend)
    with gr.Blocks(title="hf-cxr-mae chest X-ray demo") as demo:
        gr.Markdown("# Chest X-ray findings with a masked-autoencoder ViT\n" + DISCLAIMER)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="X-ray (PNG, JPEG or DICOM)",
                    file_types=[".png", ".jpg", ".jpeg", ".dcm"],
                    type="filepath",
                )
                ratio = gr.Slider(
                    0.5,
                    0.95,
                    value=analyzer.mask_ratio,
                    step=0.05,
                    label="MAE mask ratio",
                    visible=analyzer.mae is not None,
                )
                run = gr.Button("Analyze", variant="primary")
                status = gr.Markdown(elem_id="status")
                gr.Examples(
                    synthetic_examples(Path(tempfile.gettempdir()) / "hf_cxr_mae_demo"),
                    inputs=upload,
                    label="Synthetic examples (not patients)",
                )
            with gr.Column(scale=1):
                findings = gr.Label(
                    label="Probability per finding"
                    + (" (DEMO model, synthetic training data)" if analyzer.demo_data else ""),
                    num_top_classes=len(analyzer.names),
                    elem_id="findings",
                )
                if analyzer.demo_data:
                    gr.Markdown(DEMO_NOTICE, elem_id="demo-notice")
                heatmap = gr.Image(
                    label="Heatmap (top finding)",
                    type="pil",
                    elem_id="heatmap",
                    visible=not analyzer.onnx,
                )
                if analyzer.onnx:
                    gr.Markdown(ONNX_NOTE, elem_id="onnx-notice")
        recon = gr.Image(
            label="MAE reconstruction: original | masked | reconstruction | visible + recon.",
            type="pil",
            visible=analyzer.mae is not None,
            elem_id="reconstruction",
        )
        run.click(
            analyzer.analyze, inputs=[upload, ratio], outputs=[findings, heatmap, recon, status]
        )
    return demo


def launch(
    model_id: str,
    mae_id: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    backend: Backend = "auto",
) -> None:
    try:
        app = build_demo(model_id, mae_id, backend)
    except ValueError as err:  # a model that cannot be served, named before a server starts
        raise SystemExit(f"demo: {err}") from err
    app.launch(server_name=host, server_port=port, show_error=True)
