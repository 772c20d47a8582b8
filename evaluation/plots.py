"""Pictures of an evaluation: t-SNE of embeddings, template similarity matrix, per-distortion bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE

from core.embedding.templates import templates


def per_distortion_bars(report: dict, out: Path) -> None:
    kinds = list(report["per_distortion"])
    values = [report["per_distortion"][k] * 100 for k in kinds]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(kinds, values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylim(0, 105)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Gallery retrieval top-1 per distortion (overall {report['top1'] * 100:.1f}%)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def similarity_matrix(embeddings: np.ndarray, labels: Sequence[str], out: Path, max_ids: int = 40) -> None:
    tmpl, names = templates(embeddings, labels)
    tmpl, names = tmpl[:max_ids], names[:max_ids]
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(tmpl @ tmpl.T, vmin=-0.2, vmax=1.0, cmap="viridis")
    ax.set_title(f"Identity-template cosine similarity ({len(names)} identities)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def tsne(embeddings: np.ndarray, labels: Sequence[str], clean: Sequence[bool], out: Path, n_ids: int = 12, seed: int = 0) -> None:
    """t-SNE of a sample of identities: dots are clean photos, crosses distorted ones."""
    labels_arr, clean_arr = np.asarray(labels), np.asarray(clean)
    chosen = sorted(set(labels))[:: max(1, len(set(labels)) // n_ids)][:n_ids]
    mask = np.isin(labels_arr, chosen)
    if mask.sum() < 5:
        return
    points = TSNE(perplexity=min(30, mask.sum() - 1), random_state=seed, init="pca").fit_transform(embeddings[mask])
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(chosen):
        sel = labels_arr[mask] == name
        for is_clean, marker, size in ((True, "o", 60), (False, "x", 25)):
            pts = points[sel & (clean_arr[mask] == is_clean)]
            ax.scatter(pts[:, 0], pts[:, 1], color=cmap(i % 20), marker=marker, s=size, label=name if is_clean else None)
    ax.set_title("t-SNE of embeddings (o clean, x distorted)")
    ax.legend(fontsize=6, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_all(report: dict, embeddings: np.ndarray, labels: Sequence[str], clean: Sequence[bool], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "per_distortion.png", out_dir / "similarity_matrix.png", out_dir / "tsne.png"]
    per_distortion_bars(report, paths[0])
    similarity_matrix(embeddings[np.asarray(clean)], [label for label, c in zip(labels, clean) if c], paths[1])
    tsne(embeddings, labels, clean, paths[2])
    return paths
