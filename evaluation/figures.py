"""Figures of ``dexac evaluate``: per-frame curves and a strip of imagined vs true frames."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FAMILY_MARKERS = {"wrist": ("s", "#ffd400"), "finger": ("o", "#00e5ff"), "head": ("x", "#ff3df5")}
REFERENCE_STYLE = {
    "vae_reconstruction": ("VAE reconstruction (ceiling)", "k", "--"),
    "copy_last_context": ("copy last context frame", "grey", ":"),
}


def plot_curves(results: list[dict], path: str) -> None:
    """PSNR and wrist/finger/head PCK@10 against the predicted frame index, every checkpoint
    (true and frozen actions) and the two references."""
    panels = [
        ("psnr", "PSNR (dB)"),
        ("pck@10/wrist", "wrist PCK@10"),
        ("pck@10/finger", "finger PCK@10"),
        ("pck@10/head", "head PCK@10"),
    ]
    panels = [p for p in panels if p[0] in results[0]["curves"]["true"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, r in enumerate(results):
            color = f"C{i}"
            for variant, style in (("true", "-"), ("frozen", "-.")):
                values = r["curves"][variant].get(key)
                if values is not None:
                    ax.plot(
                        np.arange(1, len(values) + 1),
                        _floats(values),
                        style,
                        color=color,
                        label=f"{r['label']} ({variant} actions)",
                    )
        for method, (label, color, style) in REFERENCE_STYLE.items():
            values = results[0]["curves"][method].get(key)
            if values is not None:
                ax.plot(
                    np.arange(1, len(values) + 1), _floats(values), style, color=color, label=label
                )
        ax.set_title(title)
        ax.set_xlabel("predicted frame")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_strip(
    rows: list[tuple[str, np.ndarray, object]], families, path: str, columns: int = 8
) -> None:
    """A grid: one row per (label, frames (F, H, W, 3), detections or None), ``columns``
    evenly spaced frames; detected keypoints drawn by family (found ones only)."""
    count = len(rows[0][1])
    picks = np.unique(np.linspace(0, count - 1, min(columns, count)).round().astype(int))
    fig, axes = plt.subplots(
        len(rows), len(picks), figsize=(1.6 * len(picks), 1.75 * len(rows)), squeeze=False
    )
    families = np.asarray(families)
    for r, (label, frames, detections) in enumerate(rows):
        for c, t in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(frames[t], interpolation="nearest")
            if detections is not None:
                for family, (marker, color) in FAMILY_MARKERS.items():
                    mask = (families == family) & detections.found[t]
                    uv = detections.uv[t][mask]
                    ax.scatter(
                        uv[:, 0] - 0.5, uv[:, 1] - 0.5, s=9, marker=marker, c=color, linewidths=0.8
                    )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame +{t + 1}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
