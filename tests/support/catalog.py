"""A tiny generic catalog made on the fly: items with PNG images and text, users with interactions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 200),
    "yellow": (230, 210, 40),
    "black": (15, 15, 15),
    "white": (240, 240, 240),
}
KINDS = ("mug", "shirt", "lamp", "chair", "poster")


def make_catalog(root: Path, n_items: int = 30, n_users: int = 24, seed: int = 0) -> Path:
    """Write items.csv, interactions.csv and images/ under `root`; return the folder."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    colour_names = list(COLOURS)
    rows = []
    for item in range(n_items):
        colour = colour_names[item % len(colour_names)]
        kind = KINDS[item % len(KINDS)]
        pixels = np.full((48, 40, 3), COLOURS[colour], dtype=np.uint8)
        pixels[rng.integers(0, 48, 20), rng.integers(0, 40, 20)] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(images / f"{item}.png")
        rows.append(
            {
                "item_id": str(item),
                "title": f"{colour.title()} {kind} {item}",
                "text": f"A {colour} {kind}, item number {item}, for the home.",
                "image": f"images/{item}.png",
            }
        )
    write_csv(root / "items.csv", rows)
    interactions = []
    for user in range(n_users):
        # each user prefers one colour: the features carry the signal, so models can learn it
        liked = [i for i in range(n_items) if i % len(colour_names) == user % len(colour_names)]
        others = rng.choice(n_items, size=3, replace=False).tolist()
        for t, item in enumerate(dict.fromkeys(liked + others)):
            interactions.append({"user_id": f"u{user}", "item_id": str(item), "timestamp": 1000 + t})
    write_csv(root / "interactions.csv", interactions)
    return root


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_config(root: Path, catalog: Path, *, name: str = "tiny", extra: str = "",
                 embed_batch_size: int = 16) -> Path:
    """A run config over the tiny catalog: descriptor captions, MiniLM, a few LIRDRec epochs."""
    path = root / f"{name}.toml"
    path.write_text(
        f"""
name = "{name}"
store = "store-{name}"

[dataset]
kind = "generic"
items = "{catalog / 'items.csv'}"
interactions = "{catalog / 'interactions.csv'}"
timestamp_column = "timestamp"

[split]
method = "random"
seed = 7

[caption]
backend = "descriptor"

[embed]
batch_size = {embed_batch_size}

[train]
model = "lirdrec"
epochs = 3
patience = 2
batch_size = 64
embedding_size = 16
knn_k = 3

[rank]
k = 5
{extra}
"""
    )
    return path
