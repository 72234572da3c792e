"""Every picture the package draws. Evaluation: ROC curves, the confusion matrix, the subgroup
forest plot, reliability diagrams per finding and the paired comparison of two models
(matplotlib, Agg backend; PNG files). Models: MAE reconstructions (original | masked |
reconstruction | pasted) and the Grad-CAM overlay on an X-ray (PIL images).

Both ``evaluation`` and ``serving`` draw with these, so this module imports neither (nor torch
at import time: the reports need no torch). Plots need matplotlib (``pip install
'hf-cxr-mae[viz]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from .metrics.calibration import expected_calibration_error, reliability_curve

if TYPE_CHECKING:
    import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def subgroup_figure(report: Mapping[str, Any], path: str | Path) -> Path:
    """Forest plot of a ``subgroup_report``: one row per subgroup (count in the label), its mean
    AUROC with the 95% interval, a dashed line at the overall mean AUROC; groups flagged below
    the overall value in red, groups without a defined mean AUROC marked as such."""
    plt = _pyplot()
    overall = report["overall"]
    rows: list[tuple[str, dict | None, bool]] = [(f"Overall (n={overall['count']})", overall, True)]
    for column, by_value in report["groups"].items():
        rows.append((column, None, True))  # a header row
        for value, stats in by_value.items():
            rows.append((f"{value} (n={stats['count']})", stats, False))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.3))
    for y, (_, stats, _) in enumerate(rows):
        if stats is None:
            continue
        if stats.get("mauc") is None:
            ax.text(0.5, y, "undefined (one class per finding)", va="center", fontsize=8)
            continue
        color = "tab:red" if stats.get("below_overall") else "black"
        ci = stats.get("mauc_ci95")
        if ci:
            ax.plot(ci, [y, y], color=color, lw=1.6)
        ax.plot(stats["mauc"], y, "D" if stats is overall else "o", color=color, ms=6)
        undefined = stats.get("undefined") or []
        note = f"  {stats['mauc']:.3f}" + (f"  ({len(undefined)} undefined)" if undefined else "")
        ax.annotate(note, (1.0, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    if overall.get("mauc") is not None:
        ax.axvline(overall["mauc"], color="gray", ls="--", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _, _ in rows])
    for tick, (_, _, header) in zip(ax.get_yticklabels(), rows, strict=True):
        if header:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    lows = [s["mauc_ci95"][0] for _, s, _ in rows if s and s.get("mauc_ci95")]
    ax.set_xlim(min([0.4, *lows]) - 0.02, 1.0)
    ax.set_xlabel(f"mean AUROC ({int(100 * report.get('level', 0.95))}% bootstrap interval)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        "Mean AUROC by subgroup (dashed: overall; red: interval entirely below it)", fontsize=10
    )
    return _save(fig, path)


def reliability_figure(
    targets: np.ndarray,
    probabilities: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    n_bins: int = 15,
) -> Path:
    """Reliability diagram per finding: fraction of positives against mean predicted
    probability per equal-width bin (marker area ~ images in the bin), the diagonal of perfect
    calibration, the image counts per bin as grey bars (right axis) and the ECE in the title."""
    plt = _pyplot()
    targets = np.asarray(targets, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = len(names)
    cols = min(4, k)
    grid_rows = math.ceil(k / cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(3.2 * cols, 3.1 * grid_rows), squeeze=False)
    edges = np.linspace(0, 1, n_bins + 1)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        mean_predicted, fraction_positive, counts = reliability_curve(
            targets[:, j], probabilities[:, j], n_bins
        )
        ece = expected_calibration_error(targets[:, j], probabilities[:, j], n_bins)
        bars = ax.twinx()
        bars.bar(edges[:-1], counts, width=1 / n_bins, align="edge", color="0.85", zorder=0)
        bars.set_yticks([])
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1)
        filled = counts > 0
        if filled.any():
            sizes = 12 + 120 * counts[filled] / counts.max()
            ax.plot(mean_predicted[filled], fraction_positive[filled], color="tab:blue", lw=1)
            ax.scatter(mean_predicted[filled], fraction_positive[filled], s=sizes, zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}  ECE {ece:.3f}" if not math.isnan(ece) else name, fontsize=9)
        if j % cols == 0:
            ax.set_ylabel("fraction positive")
        if j + cols >= k:  # no panel below this one
            ax.set_xlabel("mean predicted probability")
    for j in range(k, grid_rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Reliability diagrams (grey: images per bin)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def comparison_figure(result: Mapping[str, Any], names: Sequence[str], path: str | Path) -> Path:
    """The paired comparison of models A and B (a ``compare`` result): left, per-finding and
    mean AUROC of each; right, the difference A - B with its 95% interval (DeLong per finding,
    paired bootstrap for the mean), the zero line and the p-value."""
    plt = _pyplot()
    findings = result["findings"]
    rows = [*names, "Mean AUROC"]
    entries = [findings[n] for n in names] + [result["mean"]]
    label_a = result.get("label_a", "A")
    label_b = result.get("label_b", "B")
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 0.34 * len(rows) + 1.4), sharey=True, gridspec_kw={"wspace": 0.05}
    )
    for y, entry in enumerate(entries):
        for key, marker, color, label in (
            ("auroc_a", "o", "tab:blue", label_a),
            ("auroc_b", "s", "tab:orange", label_b),
        ):
            if entry.get(key) is not None:
                shown = label not in left.get_legend_handles_labels()[1]
                left.plot(entry[key], y, marker, color=color, label=label if shown else None)
        if entry.get("difference") is None:
            right.text(0, y, "undefined", va="center", ha="center", fontsize=8)
            continue
        ci = entry.get("ci95")
        p = entry.get("p_value")
        significant = p is not None and p < 0.05
        color = "tab:green" if significant and entry["difference"] > 0 else "black"
        color = "tab:red" if significant and entry["difference"] < 0 else color
        if ci:
            right.plot(ci, [y, y], color=color, lw=1.6)
        right.plot(entry["difference"], y, "D" if y == len(rows) - 1 else "o", color=color)
        if p is None:
            text = entry.get("note", "not tested").split(":")[-1].strip()
        else:
            text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
        right.annotate(
            f"  {text}", (1.0, y), xycoords=("axes fraction", "data"), va="center", fontsize=8
        )
    left.set_yticks(range(len(rows)))
    left.set_yticklabels(rows)
    left.get_yticklabels()[-1].set_fontweight("bold")
    left.invert_yaxis()
    left.axhline(len(rows) - 1.5, color="0.7", lw=0.8)
    right.axhline(len(rows) - 1.5, color="0.7", lw=0.8)
    left.set_xlabel("AUROC")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    right.axvline(0, color="gray", ls="--", lw=1)
    right.set_xlabel(f"AUROC difference {label_a} - {label_b} (95% CI)")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"{label_a} vs {label_b} on {result.get('num_images', '?')} paired images "
        "(per finding: DeLong; mean: paired bootstrap)",
        fontsize=10,
    )
    return _save(fig, path)


def roc_figure(scores: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path) -> None:
    """A panel per finding: ROC curve, chance line, AUROC and counts in the title."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        keep = labels[:, j] != -1
        y, s = labels[keep, j], scores[keep, j]
        ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        if y.size and y.min() != y.max():
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, linewidth=1.8)
            title = (
                f"{name}\nAUROC {roc_auc_score(y, s):.3f} ({int(y.sum())}+/{int((y == 0).sum())}-)"
            )
        else:
            title = f"{name}\nAUROC undefined (one class)"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_figure(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    """The single-label confusion matrix: true classes as rows, predicted as columns, counts."""
    plt = _pyplot()
    size = 1.2 + 0.8 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=color, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _to_uint8(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    return (x * std + mean).clamp(0, 1).mul(255).round().byte().cpu().numpy()


def reconstruction_panels(
    model,
    pixel_values: torch.Tensor,
    seed: int = 0,
    normalization: Sequence[tuple[Sequence[float], Sequence[float]] | None] | None = None,
) -> list[np.ndarray]:
    """Per image, four HxW uint8 panels: original, masked (grey patches), reconstruction,
    reconstruction with the visible patches pasted back. Uses ``model.config.mask_ratio``.
    ``normalization`` gives each image's (mean, std) where it differs from the model's (per-source
    pre-training normalisation; None: the model's); the first channel's values are undone."""
    import torch  # here, not at the top: the evaluation figures need no torch

    with torch.no_grad():
        return _panels(model, pixel_values, torch.Generator().manual_seed(seed), normalization)


def _panels(model, pixel_values, generator, normalization) -> list[list[np.ndarray]]:
    """``reconstruction_panels`` under ``torch.no_grad()``."""
    import torch

    was_training = model.training
    model.eval()
    config = model.config
    num_patches = (pixel_values.shape[-1] // config.patch_size) ** 2
    noise = torch.rand(pixel_values.shape[0], num_patches, generator=generator).to(
        pixel_values.device
    )
    out = model(pixel_values, noise=noise)
    pred = out.logits
    if config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        target = model.patchify(pixel_values)
        pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
    recon = model.unpatchify(pred)
    mask = out.mask.unsqueeze(-1).expand(-1, -1, config.patch_size**2 * config.num_channels)
    mask = model.unpatchify(mask)
    mean = float(getattr(config, "image_mean", [0.5])[0])
    std = float(getattr(config, "image_std", [0.25])[0])
    panels = []
    for i in range(pixel_values.shape[0]):
        if normalization is not None and normalization[i] is not None:
            mean, std = float(normalization[i][0][0]), float(normalization[i][1][0])
        original = _to_uint8(pixel_values[i, 0], mean, std)
        masked = np.where(mask[i, 0].cpu().numpy() > 0.5, 128, original).astype(np.uint8)
        rec = _to_uint8(recon[i, 0], mean, std)
        pasted = np.where(mask[i, 0].cpu().numpy() > 0.5, rec, original).astype(np.uint8)
        panels.append([original, masked, rec, pasted])
    model.train(was_training)
    return panels


def reconstruction_grid(
    model,
    pixel_values: torch.Tensor,
    seed: int = 0,
    scale: int = 1,
    normalization: Sequence[tuple[Sequence[float], Sequence[float]] | None] | None = None,
) -> Image.Image:
    """One image: a row per input, columns original | masked | reconstruction | visible + recon.
    ``normalization`` as in ``reconstruction_panels``."""
    rows = reconstruction_panels(model, pixel_values, seed, normalization)
    h, w = rows[0][0].shape[0] * scale, rows[0][0].shape[1] * scale
    header, gap = 14, 2
    titles = [
        "original",
        f"masked {model.config.mask_ratio:.0%}",
        "reconstruction",
        "visible + recon.",
    ]
    canvas = Image.new("L", (4 * w + 3 * gap, header + len(rows) * (h + gap)), 255)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text(
            (c * (w + gap) + 2, 1),
            title if draw.textlength(title) < w - 4 else title.split()[0],
            fill=0,
        )
    for r, panels in enumerate(rows):
        for c, panel in enumerate(panels):
            tile = Image.fromarray(panel).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (c * (w + gap), header + r * (h + gap)))
    return canvas


def heatmap_overlay(
    image: Image.Image, cam: np.ndarray, settings, max_side: int = 1024
) -> Image.Image:
    """The X-ray (its own aspect ratio) with the map drawn over the centre crop the model saw."""
    import matplotlib

    width, height = image.size
    shrink = min(1.0, max_side / max(width, height))
    shown = image.convert("L").resize(
        (max(1, round(width * shrink)), max(1, round(height * shrink))), Image.BICUBIC
    )
    w, h = shown.size
    # The eval transform: shortest side -> image_size / crop_pct, then a centre crop of image_size.
    crop = min(w, h) * settings.crop_pct
    left, top = (w - crop) / 2, (h - crop) / 2
    heat = np.zeros((h, w), dtype=np.float32)
    box = (round(left), round(top), round(left + crop), round(top + crop))
    patch = Image.fromarray((cam * 255).astype(np.uint8)).resize(
        (box[2] - box[0], box[3] - box[1]), Image.BICUBIC
    )
    heat[box[1] : box[3], box[0] : box[2]] = np.asarray(patch, dtype=np.float32) / 255
    colored = matplotlib.colormaps["inferno"](heat)[..., :3]
    base = np.asarray(shown, dtype=np.float32)[..., None] / 255
    alpha = 0.55 * heat[..., None]
    mixed = (1 - alpha) * base + alpha * colored
    return Image.fromarray((mixed * 255).round().astype(np.uint8))
