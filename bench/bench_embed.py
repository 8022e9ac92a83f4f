"""Embedding throughput: the embed stage on the MovieLens item texts vs a bare SentenceTransformer.encode.

Same model (all-MiniLM-L6-v2, packaged weights), same batch size, same texts, same process; model
loading excluded from both. The stage's time includes reading the catalog, hashing, the truncation
check, writing Parquet parts and compacting. Usage:

    nice -n 5 python bench/bench_embed.py                 # 1,682 texts, batch 64, 2 rounds
    python bench/bench_embed.py --limit 200 --rounds 1    # a quick try
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEM_TEXT = ROOT.parent / "shared" / "bench" / "ml100k-mmrec" / "item_text.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="first N texts only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds; the best of each is kept"
    )
    args = parser.parse_args()

    import pyarrow as pa
    import torch

    from extractors.config import ModalityConfig, SentenceTransformersEmbedConfig
    from extractors.st_embedder import SentenceTransformerEmbedder
    from pipeline.extract import embed_store
    from pipeline.schemas import ITEMS
    from pipeline.store import StoreLayout, write_table

    with open(ITEM_TEXT, encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][: args.limit]
    config = SentenceTransformersEmbedConfig(batch_size=args.batch_size)
    embedder = SentenceTransformerEmbedder(
        config
    )  # loaded once; the stage is handed this same model
    from extractors import factory

    factory.build_embedder = lambda _config: embedder
    print(
        f"texts {len(texts)}, model {config.model} (dim {embedder.dim}), batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    bare_times, stage_times = [], []
    for round_index in range(args.rounds):
        started = time.perf_counter()
        embedder.model.encode(
            texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        bare_times.append(time.perf_counter() - started)
        store = Path(tempfile.mkdtemp(prefix="bench_embed_"))
        try:
            items = pa.Table.from_pylist(
                [
                    {
                        "item_id": str(i),
                        "title": None,
                        "text": text,
                        "image_path": None,
                        "image_sha256": None,
                    }
                    for i, text in enumerate(texts)
                ],
                ITEMS,
            )
            write_table(StoreLayout(store).items, items, ITEMS)
            summary = embed_store(
                config, {"text": ModalityConfig(source="text")}, store, progress=False
            )
            assert summary.computed == len(texts), summary
            stage_times.append(summary.stage_seconds)
        finally:
            shutil.rmtree(store)
        print(
            f"round {round_index + 1}: bare encode {bare_times[-1]:.1f}s, embed stage {stage_times[-1]:.1f}s"
        )
    bare, stage = min(bare_times), min(stage_times)
    print(f"bare encode : {len(texts) / bare:8.1f} texts/s ({bare:.1f}s, best of {args.rounds})")
    print(f"embed stage : {len(texts) / stage:8.1f} texts/s ({stage:.1f}s, best of {args.rounds})")
    print(f"stage / bare throughput: {bare / stage:.1%}")


if __name__ == "__main__":
    main()
