"""The paper's analysis figures: what drives AdaLN, and how the action tokens organise.

- AdaLN action-embedding heatmap: for real action chunks, the norm of the Jacobian of the
  global action embedding (the vector added to the timestep embedding that drives AdaLN) with
  respect to each *normalised* action input (chunk row x dimension), averaged over chunks.
  A conditioning that lets wrist/head dims drown the fingers shows dark finger columns.
- Action-token PCA (and t-SNE): DexAC's per-dimension tokens of many chunks, projected to 2D
  and coloured by family (head, wrist, finger).
Written by ``dexac evaluate --analysis`` next to the evaluation's other files.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

FAMILY_OF_DIM = np.array(["head"] * 9 + ["wrist"] * 18 + ["finger"] * 30)  # = actions.FAMILY_INDEX
FAMILY_COLORS = {"head": "#d62728", "wrist": "#1f77b4", "finger": "#2ca02c"}


def action_chunks(model, episodes, per_episode: int = 8, max_episodes: int = 8) -> torch.Tensor:
    """(N, 1 + action_frames, 57) raw action chunks drawn evenly from the first episodes."""
    rows = int(model.config.action_rows)
    chunks = []
    for episode in episodes[:max_episodes]:
        starts = np.linspace(0, len(episode.actions) - rows, per_episode).round().astype(int)
        chunks += [episode.actions[s : s + rows] for s in np.unique(starts)]
    return torch.as_tensor(np.stack(chunks), dtype=torch.float32)


def adaln_sensitivity(model, chunks: torch.Tensor) -> np.ndarray | None:
    """(rows, 57) mean |d global_emb / d normalised action| over chunks; None without one."""
    actions = chunks.clone().requires_grad_(True)
    with torch.enable_grad():
        conditioning = model.conditioner(actions, None)
        if conditioning.global_emb is None:
            return None
        jac_norms = []
        for i in range(len(actions)):  # one backward per chunk: per-sample Jacobian norms
            emb = conditioning.global_emb[i]
            grads = [
                torch.autograd.grad(emb[j], actions, retain_graph=True)[0][i]
                for j in range(0, emb.shape[0], max(1, emb.shape[0] // 32))
            ]
            jac_norms.append(torch.stack(grads).pow(2).sum(0).sqrt())  # (rows, 57)
    std = torch.as_tensor(np.asarray(model.action_std), dtype=torch.float32)
    return (torch.stack(jac_norms).mean(0) * std).detach().numpy()  # per unit of normalised input


def action_tokens(model, chunks: torch.Tensor) -> np.ndarray | None:
    """(N, 57, C) DexAC action tokens; None for variants without per-dimension tokens."""
    tokenizer = getattr(model.conditioner, "tokenizer", None)
    if tokenizer is None:
        return None
    with torch.no_grad():
        return tokenizer(model.conditioner.normalizer(chunks)).numpy()


def plot_adaln_heatmap(maps: list[tuple[str, np.ndarray]], path: str) -> None:
    fig, axes = plt.subplots(len(maps), 1, figsize=(11, 1.6 + 1.3 * len(maps)), squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], maps, strict=True):
        shown = values / max(values.max(), 1e-12)
        image = ax.imshow(shown, aspect="auto", cmap="magma", vmin=0, vmax=1)
        for boundary in (8.5, 26.5):
            ax.axvline(boundary, color="white", lw=1)
        ax.set_title(
            f"{label}: |d AdaLN action embedding / d normalised action| (max = 1); "
            f"head | wrist | finger",
            fontsize=8,
        )
        ax.set_ylabel("chunk row")
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1, 0].set_xlabel("action dimension (0-8 head, 9-26 wrists, 27-56 fingertips)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_token_projections(tokens: list[tuple[str, np.ndarray]], path: str, tsne: bool) -> None:
    columns = 2 if tsne else 1
    fig, axes = plt.subplots(
        len(tokens), columns, figsize=(4.5 * columns, 4 * len(tokens)), squeeze=False
    )
    for r, (label, values) in enumerate(tokens):
        flat = values.reshape(-1, values.shape[-1])  # (N*57, C)
        family = np.tile(FAMILY_OF_DIM, values.shape[0])
        projections = [("PCA", PCA(n_components=2, random_state=0).fit_transform(flat), family)]
        if tsne:  # whole chunks up to ~1,200 tokens: t-SNE is slow on 2 cores
            keep = min(values.shape[0], max(1, 1200 // values.shape[1])) * values.shape[1]
            perplexity = min(30.0, max(5.0, (keep - 1) / 4))
            model = TSNE(n_components=2, random_state=0, init="pca", perplexity=perplexity)
            projections.append(("t-SNE", model.fit_transform(flat[:keep]), family[:keep]))
        for c, (name, points, point_family) in enumerate(projections):
            ax = axes[r, c]
            for fam, color in FAMILY_COLORS.items():
                mask = point_family == fam
                ax.scatter(points[mask, 0], points[mask, 1], s=4, c=color, label=fam, alpha=0.6)
            ax.set_title(f"{label}: action tokens, {name}", fontsize=9)
            ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_analysis(models: list[tuple[str, object]], episodes, stem: str) -> list[str]:
    """Both figures for every model that has the part they show; returns the paths written."""
    written = []
    maps, tokens = [], []
    for label, model in models:
        chunks = action_chunks(model, episodes)
        heat = adaln_sensitivity(model, chunks)
        if heat is not None:
            maps.append((label, heat))
        tok = action_tokens(model, chunks)
        if tok is not None:
            tokens.append((label, tok))
    if maps:
        plot_adaln_heatmap(maps, f"{stem}_adaln_heatmap.png")
        written.append(f"{stem}_adaln_heatmap.png")
    if tokens:
        plot_token_projections(tokens, f"{stem}_tokens_pca.png", tsne=True)
        written.append(f"{stem}_tokens_pca.png")
    return written
