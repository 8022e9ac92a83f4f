"""MovieLens-100k adapter: the SPLIT.md text template, posters and their hashes, bad raw files."""

import csv
import hashlib
from pathlib import Path

import pytest

from pipeline.datasets import DatasetError
from pipeline.datasets.movielens import item_text, load_movielens

SHARED = Path(__file__).parents[2] / "shared"
MOVIELENS = SHARED / "data" / "movielens-100k"
ITEM_TEXT = SHARED / "bench" / "ml100k-mmrec" / "item_text.csv"


@pytest.mark.skipif(
    not ITEM_TEXT.exists() or not MOVIELENS.exists(),
    reason=f"MovieLens-100k data not found under {SHARED}",
)
def test_item_text_equals_the_reference_for_all_items():
    source = load_movielens(MOVIELENS)
    ours = dict(
        zip(
            source.items.column("item_id").to_pylist(),
            source.items.column("text").to_pylist(),
            strict=True,
        )
    )
    with open(ITEM_TEXT, encoding="utf-8") as handle:
        reference = {row["orig_item_id"]: row["text"] for row in csv.DictReader(handle)}
    assert len(reference) == len(ours) == 1682
    assert ours == reference
    assert source.interactions.num_rows == 100_000
    titles = dict(
        zip(
            source.items.column("item_id").to_pylist(),
            source.items.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles["1"] == "Toy Story"
    row = source.items.column("item_id").to_pylist().index("1")
    poster = MOVIELENS / "posters" / "1.jpg"
    assert source.items.column("image_path")[row].as_py() == str(poster.resolve())
    assert (
        source.items.column("image_sha256")[row].as_py()
        == hashlib.sha256(poster.read_bytes()).hexdigest()
    )


def test_item_text_template_parts():
    text = item_text(
        "Heat",
        "1995",
        ["Action", "unknown"],
        "  A  heist\n goes wrong. ",
        ["Michael Mann"],
        ["Al Pacino", "Robert De Niro"],
    )
    assert (
        text
        == "Heat (1995). Genres: Action. A heist goes wrong. Directed by Michael Mann. Starring Al Pacino, Robert De Niro."
    )
    assert (
        item_text(
            "Odd",
            "V",
            ["unknown"],
            "It looks like we don't have any Plot Summaries for this title yet.",
            [],
            [],
        )
        == "Odd."
    )


ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_movielens(
    folder: Path, items: str, inter: str, posters: tuple[str, ...] = ("1",)
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.item").write_text(ITEM_HEADER + items, encoding="utf-8")
    (folder / "ml-100k.inter").write_text(INTER_HEADER + inter, encoding="utf-8")
    (folder / "posters").mkdir(exist_ok=True)
    for item_id in posters:
        (folder / "posters" / f"{item_id}.jpg").write_bytes(b"\xff\xd8 poster " + item_id.encode())
    return folder


def test_tiny_catalog_counts_missing_posters_unknown_items_and_ratings(tmp_path):
    folder = write_movielens(
        tmp_path / "ml",
        '1\tVéronique\t1991\tDrama\n2\t"Quoted" Title\tunkonwn\tunknown\n',
        "1\t1\t5\t100.0\n1\t2\t2\t200.0\n2\t99\t4\t300.0\n",
    )
    source = load_movielens(folder)
    assert source.items.column("text").to_pylist() == [
        "Véronique (1991). Genres: Drama.",
        '"Quoted" Title.',
    ]
    assert source.items.column("image_path").null_count == 1
    drops = {d.kind: d for d in source.drops}
    assert drops["images"].count == 1 and drops["images"].examples == ("2",)
    assert set(drops) == {"images"}  # unknown item 99 is ingest's to drop (test_ingest.py)
    assert source.interactions.column("timestamp").to_pylist() == [100, 200, 300]
    rated = load_movielens(folder, min_rating=4)
    assert rated.interactions.column("item_id").to_pylist() == ["1", "99"]
    assert any("min_rating 4" in d.reason and d.count == 1 for d in rated.drops)


def test_duplicate_item_ids_are_an_error_naming_file_and_id(tmp_path):
    folder = write_movielens(
        tmp_path / "ml", "1\tA\t1990\tDrama\n1\tB\t1991\tDrama\n", "1\t1\t5\t1\n"
    )
    with pytest.raises(DatasetError, match=r"ml-100k\.item.*duplicate item id.*1"):
        load_movielens(folder)


def test_undecodable_text_is_an_error_naming_file_and_line(tmp_path):
    folder = write_movielens(tmp_path / "ml", "1\tA\t1990\tDrama\n", "1\t1\t5\t1\n")
    (folder / "ml-100k.item").write_bytes(
        ITEM_HEADER.encode() + b"1\tA\t1990\tDrama\n2\tB\xff\xfe\t1991\tDrama\n"
    )
    with pytest.raises(DatasetError, match=r"ml-100k\.item: text is not valid UTF-8 \(line 3"):
        load_movielens(folder)


def test_empty_and_header_only_files_are_errors_naming_the_file(tmp_path):
    folder = write_movielens(tmp_path / "ml", "1\tA\t1990\tDrama\n", "")
    with pytest.raises(DatasetError, match=r"ml-100k\.inter: no rows"):
        load_movielens(folder)
    (folder / "ml-100k.inter").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"ml-100k\.inter: empty file"):
        load_movielens(folder)
