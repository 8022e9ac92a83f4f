"""Planted synthetic data written as an MMRec folder (`<name>.inter` + feature .npy files) with a
config over it: a catalog that trains without captioning or embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.synthetic import planted_data


def write_planted_mmrec(root: Path, *, extra: str = "", seed: int = 0) -> Path:
    """root/planted/{planted.inter, image_feat.npy, text_feat.npy} and root/planted.toml."""
    data = planted_data(seed=seed)
    folder = root / "planted"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\trating\ttimestamp\tx_label\n"]
    for label, pairs in enumerate((data.train, data.valid, data.test)):
        lines += [f"{user}\t{item}\t1.0\t0\t{label}\n" for user, item in pairs]
    (folder / "planted.inter").write_text("".join(lines), encoding="utf-8")
    for name in ("image", "text"):
        np.save(folder / f"{name}_feat.npy", data.features[name])
    config = root / "planted.toml"
    config.write_text(f"""
name = "planted"
store = "store"

[dataset]
kind = "mmrec"
path = "planted"

[split]
method = "given"

[modalities.image]
source = "imported"

[modalities.text]
source = "imported"

[train]
model = "lirdrec"
epochs = 3
batch_size = 127
embedding_size = 8
knn_k = 3
learning_rate = 1e-2
device = "cpu"
feature_dtype = "float32"
topk = [5, 10, 20]
{extra}
""", encoding="utf-8")
    return config
