"""Attention heatmaps (`zoo predict --attention FILE`): the weights an attention model gave one input, drawn as the
book draws them (d2l §11.1.3 ``show_heatmaps``: queries down, keys across), with the tokens on the axes.

A model with attention offers ``attention_maps(src (1, m) int64, src_valid_len (1,) int64, tgt_in (1, n) int64) ->
dict[str, Tensor]``: for one sentence (its source as it was translated, padding included) and the decoder's input
(``<bos>`` then the translation), one (heads, queries, keys) tensor per attention layer, its source axes either all m
positions or the valid ones only (`crop_source` cuts them to the valid tokens), named for what it attends: a name containing
``cross`` has the target tokens as queries and the source tokens as keys, one starting with ``encoder`` the source
tokens on both axes, any other the target tokens on both. The figure has one row per map and one column per head.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from zoo_core.artifacts import atomic_path
from zoo_core.errors import ZooError

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def axes_tokens(name: str, src_tokens: Sequence[str], tgt_tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """The (query, key) tokens of the map called `name` (see the module docstring)."""
    if "cross" in name:
        return list(tgt_tokens), list(src_tokens)
    if name.startswith("encoder"):
        return list(src_tokens), list(src_tokens)
    return list(tgt_tokens), list(tgt_tokens)


def crop_source(maps: Mapping[str, Tensor], num_src: int, valid_len: int) -> dict[str, Tensor]:
    """`maps` with each source axis of length `num_src` (the padded source) cut to its first `valid_len` positions."""
    cropped = {}
    for name, weights in maps.items():
        queries_src = name.startswith("encoder") and "cross" not in name
        keys_src = queries_src or "cross" in name
        if keys_src and weights.shape[2] == num_src:
            weights = weights[:, :, :valid_len]
        if queries_src and weights.shape[1] == num_src:
            weights = weights[:, :valid_len]
        cropped[name] = weights
    return cropped


def check_path(path: str | os.PathLike) -> Path:
    """`path` if matplotlib can write its format (from its suffix) into an existing folder, else a `ZooError`
    (before any work is done). A missing folder is refused rather than made, as by any program that writes a named
    file: a mistyped folder would otherwise appear silently."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise ZooError(f"--attention {path}: name an image file ending in {', '.join('.' + f for f in FORMATS)}")
    if not path.parent.is_dir():
        raise ZooError(f"--attention {path}: the folder {path.parent} does not exist")
    return path


def save_heatmaps(path: str | os.PathLike, maps: Mapping[str, Tensor], src_tokens: Sequence[str],
                  tgt_tokens: Sequence[str], title: str = "") -> Path:
    """Draw `maps` (name -> (heads, queries, keys)) into the image file `path`, atomically; returns the path.

    Raises:
        ZooError: no maps, a map whose sizes do not match the tokens, or an unwritable/unknown file format.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    path = check_path(path)
    if not maps:
        raise ZooError("the model returned no attention maps to draw")
    num_heads = max(m.shape[0] for m in maps.values())
    fig, axes = plt.subplots(len(maps), num_heads, squeeze=False, layout="constrained",
                             figsize=(2.2 * num_heads + 1.6, 2.2 * len(maps) + 0.4))
    for row, (name, weights) in enumerate(maps.items()):
        queries, keys = axes_tokens(name, src_tokens, tgt_tokens)
        if tuple(weights.shape[1:]) != (len(queries), len(keys)):
            plt.close(fig)
            raise ZooError(f"attention map {name!r} is {tuple(weights.shape[1:])} (queries, keys), but there are "
                           f"{len(queries)} query and {len(keys)} key tokens")
        for head in range(num_heads):
            ax = axes[row][head]
            if head >= weights.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(weights[head].float().cpu().numpy(), cmap="Reds", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
            ax.set_yticks(range(len(queries)), queries, fontsize=7)
            if row == 0 or weights.shape[0] != num_heads:
                ax.set_title(f"head {head + 1}", fontsize=8)
            if head == 0:  # the map's name beside its row: "decoder cross-attention\nblock 1"
                ax.set_ylabel(name.replace(", ", "\n"), fontsize=8)
        fig.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    try:
        with atomic_path(path) as tmp:
            # "tight": the constrained layout leaves the colour bars' labels and long tick labels past the edge
            fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120, bbox_inches="tight", pad_inches=0.1)
    except OSError as e:
        raise ZooError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        plt.close(fig)
    return path


def numbered(path: str | os.PathLike, i: int, n: int) -> Path:
    """The file for sentence `i` (from 1) of `n`: `path` itself for one sentence, ``stem-i.suffix`` for several."""
    path = Path(path)
    return path if n == 1 else path.with_name(f"{path.stem}-{i}{path.suffix}")
