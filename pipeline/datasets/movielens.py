"""MovieLens-100k from its raw files: every rating an interaction, item text by SPLIT.md's template, posters."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from extractors.images import ImageFileError
from pipeline.datasets.common import (
    DatasetError,
    SourceData,
    as_strings,
    check_unique_ids,
    drop_below_rating,
    make_drop,
    read_tabular,
    require_columns,
    source_interactions,
    text_ids,
)
from pipeline.images import sha256_file

# IMDb's stand-in when a movie has no plot; the reference treats it as no plot.
_NO_PLOT = "It looks like we don't have any Plot Summaries"
_YEAR = re.compile(r"^[0-9]{4}$")


def item_text(
    title: str, year: str, genres: list[str], plot: str, directors: list[str], cast: list[str]
) -> str:
    """One item's text, exactly as ../shared/bench/ml100k-mmrec/SPLIT.md builds it (empty parts skipped)."""
    parts = [f"{title} ({year})." if _YEAR.match(year) else f"{title}."]
    genres = [genre for genre in genres if genre != "unknown"]
    if genres:
        parts.append(f"Genres: {', '.join(genres)}.")
    plot = " ".join(plot.split())
    if plot and not plot.startswith(_NO_PLOT):
        parts.append(plot)
    if directors:
        parts.append(f"Directed by {', '.join(directors)}.")
    if cast:
        parts.append(f"Starring {', '.join(cast)}.")
    return " ".join(part for part in parts if part)


def load_movielens(path: Path, min_rating: float | None = None) -> SourceData:
    """The catalog of the MovieLens-100k folder `path` (ml-100k.item/.inter, movie_details.csv, posters/)."""
    path = Path(path)
    item_file, inter_file = path / "ml-100k.item", path / "ml-100k.inter"
    details_file, poster_dir = path / "movie_details.csv", path / "posters"
    items_raw = read_tabular(
        item_file, quoted=False, string_columns=["item_id", "movie_title", "release_year", "class"]
    )
    require_columns(
        items_raw,
        {"item_id": "item_id", "title": "movie_title", "year": "release_year", "genres": "class"},
        item_file,
    )
    item_ids = text_ids(items_raw.column("item_id"), item_file, "item_id")
    check_unique_ids(item_ids, item_file, "item_id")
    titles = as_strings(items_raw.column("movie_title"), item_file, "movie_title").to_pylist()
    years = as_strings(items_raw.column("release_year"), item_file, "release_year").to_pylist()
    genre_lists = [
        genres.split()
        for genres in as_strings(items_raw.column("class"), item_file, "class").to_pylist()
    ]

    details = _read_details(details_file) if details_file.exists() else {}
    texts = []
    for item_id, title, year, genres in zip(
        item_ids.to_pylist(), titles, years, genre_lists, strict=True
    ):
        plot, directors, cast = details.get(item_id, ("", [], []))
        texts.append(item_text(title, year, genres, plot, directors, cast))

    image_paths, image_sha256 = [], []
    for item_id in item_ids.to_pylist():
        poster = poster_dir / f"{item_id}.jpg"
        digest = _poster_sha256(poster)
        image_paths.append(str(poster.resolve()) if digest else None)
        image_sha256.append(digest)
    items = pa.table(
        {
            "item_id": item_ids,
            "title": pa.array(titles, pa.string()),
            "text": pa.array(texts, pa.string()),
            "image_path": pa.array(image_paths, pa.string()),
            "image_sha256": pa.array(image_sha256, pa.string()),
            "year": pa.array([int(y) if _YEAR.match(y) else None for y in years], pa.int32()),
            "genres": pa.array(
                [[g for g in gs if g != "unknown"] for gs in genre_lists], pa.list_(pa.string())
            ),
        }
    )

    raw = read_tabular(inter_file, quoted=False, string_columns=["user_id", "item_id"])
    require_columns(
        raw,
        {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
        inter_file,
    )
    interactions = source_interactions(
        as_strings(raw.column("user_id"), inter_file, "user_id"),
        as_strings(raw.column("item_id"), inter_file, "item_id"),
        timestamp=_seconds(raw.column("timestamp"), inter_file),
        rating=raw.column("rating").combine_chunks(),
    )
    source = SourceData(
        items, interactions, files={"items": str(item_file), "interactions": str(inter_file)}
    )
    if details:
        source.files["details"] = str(details_file)
    missing = pc.filter(item_ids, pc.is_null(items.column("image_path")))
    source.add_drop(
        make_drop(
            "images", f"no poster file in {poster_dir} (item kept, image null)", missing, poster_dir
        )
    )
    interactions, below = drop_below_rating(interactions, min_rating, inter_file)
    source.add_drop(below)
    source.interactions = interactions
    return source


def _poster_sha256(poster: Path) -> str | None:
    """The poster's sha256; None when there is no regular file of a sane size (the item has no image)."""
    if not poster.is_file():
        return None
    try:
        return sha256_file(poster)
    except ImageFileError:
        return None


def _read_details(path: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """movie_id -> (plot, directors, cast) from movie_details.csv (lists are Python-literal strings)."""
    table = read_tabular(path, string_columns=["movie_id", "description", "director", "cast"])
    require_columns(
        table,
        {
            "movie_id": "movie_id",
            "description": "description",
            "director": "director",
            "cast": "cast",
        },
        path,
    )
    columns = [
        as_strings(table.column(name), path, name).to_pylist()
        for name in ("movie_id", "description", "director", "cast")
    ]
    details = {}
    for movie_id, plot, directors, cast in zip(*columns, strict=True):
        details[movie_id] = (
            plot or "",
            _name_list(directors, path, movie_id),
            _name_list(cast, path, movie_id),
        )
    return details


def _name_list(value: str | None, path: Path, movie_id: str) -> list[str]:
    if not value:
        return []
    try:
        names = ast.literal_eval(value)
    except (ValueError, SyntaxError) as error:
        raise DatasetError(
            f"{path}: movie_id {movie_id}: not a list of names: {value[:80]!r}"
        ) from error
    if not isinstance(names, list):
        raise DatasetError(f"{path}: movie_id {movie_id}: not a list of names: {value[:80]!r}")
    return [str(name) for name in names]


def _seconds(column: pa.ChunkedArray, path: Path) -> pa.Array:
    """RecBole stores timestamps as floats; the catalog keeps whole seconds."""
    values = column.combine_chunks()
    try:
        return pc.floor(values.cast(pa.float64())).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise DatasetError(f"{path}: column 'timestamp' is not numeric: {error}") from error
