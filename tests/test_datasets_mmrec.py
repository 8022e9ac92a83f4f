"""MMRec adapter: the .inter split kept, feature .npy files imported as embedding stores, bad inputs."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.datasets import DatasetError
from pipeline.datasets.mmrec import load_mmrec
from pipeline.ingest import IMPORTED_KEY, ingest
from pipeline.schemas import embeddings
from pipeline.store import PartStore, StoreLayout, read_metadata

HEADER = "userID\titemID\trating\ttimestamp\tx_label\n"


def write_inter(folder: Path, rows: list[tuple[int, int, int]], name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}\t{i}\t1.0\t0\t{x}\n" for u, i, x in rows]
    (folder / f"{name}.inter").write_text(HEADER + "".join(lines), encoding="utf-8")
    return folder


ROWS = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 1, 0), (1, 3, 0), (1, 0, 1), (1, 2, 2)]


def test_split_is_kept_and_items_have_only_ids(tmp_path):
    folder = write_inter(tmp_path / "toy", ROWS)
    source = load_mmrec(folder)
    assert source.has_split
    assert source.interactions.column("split").to_pylist() == [x for _, _, x in ROWS]
    assert source.items.column("item_id").to_pylist() == ["0", "1", "2", "3"]
    assert source.items.column("text").null_count == 4 and source.features == []


def test_feature_files_with_the_wrong_row_count_are_an_error_naming_the_file(tmp_path):
    folder = write_inter(tmp_path / "toy", ROWS)
    np.save(folder / "image_feat.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(
        DatasetError, match=r"image_feat\.npy: has 5 rows but .*toy\.inter names 4 items"
    ):
        load_mmrec(folder, features={"image_feat.npy": "image"})
    np.save(folder / "image_feat.npy", np.zeros(4, np.float32))
    with pytest.raises(DatasetError, match=r"image_feat\.npy: expected a 2-D"):
        load_mmrec(folder, features={"image_feat.npy": "image"})


def test_bad_x_label_and_item_ids_are_errors(tmp_path):
    folder = write_inter(tmp_path / "toy", [(0, 0, 0), (0, 1, 3)])
    with pytest.raises(
        DatasetError, match=r"toy\.inter: column 'x_label' must hold only 0, 1 or 2"
    ):
        load_mmrec(folder)
    (folder / "toy.inter").write_text(HEADER + "0\tabc\t1.0\t0\t0\n", encoding="utf-8")
    with pytest.raises(
        DatasetError, match=r"toy\.inter: column 'itemID' must hold non-negative integer.*abc"
    ):
        load_mmrec(folder)
    (folder / "toy.inter").write_text("userID\titemID\n0\t1\n", encoding="utf-8")
    with pytest.raises(
        DatasetError, match=r"toy\.inter: column 'x_label' \(config key split\) not found"
    ):
        load_mmrec(folder)


def test_ingest_imports_features_as_embedding_stores(tmp_path):
    folder = write_inter(tmp_path / "toy", ROWS)
    image = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "text_feat.npy", np.ones((4, 2), np.float64))
    config = Config.model_validate(
        {
            "name": "toy",
            "store": "store",
            "dataset": {"kind": "mmrec", "path": "toy"},
            "split": {"method": "given"},
        },
        context={"base_dir": tmp_path},
    )
    for _ in range(2):  # a rerun replaces the imported parts rather than piling them up
        summary = ingest(config)
    layout = StoreLayout(tmp_path / "store")
    store = PartStore(layout.embeddings("image", IMPORTED_KEY), embeddings(3))
    assert len(store.parts()) == 1
    table = store.read()
    assert table.column("item_id").to_pylist() == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(
        np.stack(table.column("vector").to_numpy(zero_copy_only=False)), image
    )
    provenance = read_metadata(store.parts()[0])
    assert provenance["source"] == "imported" and provenance["file"] == str(
        folder / "image_feat.npy"
    )
    text = PartStore(layout.embeddings("text", IMPORTED_KEY), embeddings(2)).read()
    assert text.num_rows == 4
    assert {f["modality"]: f["dim"] for f in summary.features} == {"image": 3, "text": 2}
    assert summary.split_counts == {"train": 4, "valid": 2, "test": 2}


def test_with_only_imported_features_caption_and_embed_have_nothing_to_do(tmp_path, capsys):
    """`python -m pipeline all` on an MMRec folder: no captioner or embedder is loaded (none could
    be here: the configured VLM is not on this machine), and the run trains on the imports."""
    from pipeline.__main__ import main

    folder = write_inter(tmp_path / "toy", ROWS)
    np.save(folder / "image_feat.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    np.save(folder / "text_feat.npy", np.ones((4, 2), np.float32))
    config = tmp_path / "toy.toml"
    config.write_text('name = "toy"\nstore = "store"\n[dataset]\nkind = "mmrec"\npath = "toy"\n'
                      '[split]\nmethod = "given"\n[modalities.image]\nsource = "imported"\n'
                      '[modalities.text]\nsource = "imported"\n'
                      '[train]\nepochs = 1\nembedding_size = 8\nknn_k = 2\n')
    assert main(["all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "caption: no modality reads captions (nothing to do)" in out
    assert "embed: every modality is imported (nothing to embed)" in out
    assert "best epoch" in out or "trained" in out
