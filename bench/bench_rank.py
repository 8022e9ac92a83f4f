"""Benchmark the rank stage: FAISS top-20 vs torch matmul+topk, and IVF recall@20 against exact.

(a) All users' top-20 unseen items through the project's rank code (`pipeline.rank.item_index` with
an exact flat inner-product index + `top_unseen`) against a plain torch matmul, seen-item mask and
topk, on the Amazon Clothing shape (the real users/items/seen sets from clothing.inter, seeded
N(0,1) vectors of d = 192 = 3 x 64, LIRDRec's concatenated user/item vectors) and on a 10^6-item
catalog with 10^4 users (7 random seen items each). Both must give the same top-20: the overlap is
reported.

(b) IVF recall@20 against exact search on a synthetic 10^6-item index whose vectors come from a
Gaussian mixture (clustered like real embeddings, not pure noise), for several nprobe values, with
build and search times. Usage:

    nice -n 5 python bench/bench_rank.py                         # everything, full size
    python bench/bench_rank.py --big-items 100000 --ivf-items 100000   # a quick try
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLOTHING_INTER = ROOT.parent / "shared" / "data" / "amazon" / "clothing" / "clothing.inter"
K = 20


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def clothing_seen() -> tuple[int, int, list[np.ndarray]]:
    """Users, items and each user's items (every split) of the MMRec Clothing file."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        CLOTHING_INTER,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(include_columns=["userID", "itemID"]),
    )
    users = table.column("userID").to_numpy()
    items = table.column("itemID").to_numpy()
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    return n_users, n_items, group_by_user(users, items, n_users)


def random_seen(n_users: int, n_items: int, per_user: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)]


def group_by_user(users: np.ndarray, items: np.ndarray, n_users: int) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]].astype(np.int64) for u in range(n_users)]


def faiss_top(
    user_vectors: np.ndarray, item_vectors: np.ndarray, seen: list[np.ndarray]
) -> tuple[np.ndarray, float, float]:
    """The rank stage's path: exact flat inner-product index, then top_unseen; (items, build s, search s)."""
    from pipeline.config import RankConfig
    from pipeline.rank import item_index, top_unseen

    started = time.perf_counter()
    index = item_index(item_vectors, RankConfig(index="exact", k=K))
    built = time.perf_counter()
    items, _ = top_unseen(index, user_vectors, seen, K)
    return items, built - started, time.perf_counter() - built


def torch_top(
    user_vectors: np.ndarray, item_vectors: np.ndarray, seen: list[np.ndarray], chunk: int
) -> tuple[np.ndarray, float]:
    """Plain torch: scores = U_chunk @ I^T, seen items set to -inf, topk; (items, seconds)."""
    import torch

    started = time.perf_counter()
    users = torch.from_numpy(user_vectors)
    items_t = torch.from_numpy(item_vectors).T.contiguous()
    out = np.empty((len(user_vectors), K), dtype=np.int64)
    for start in range(0, len(user_vectors), chunk):
        stop = min(start + chunk, len(user_vectors))
        scores = users[start:stop] @ items_t
        rows = np.concatenate([np.full(len(seen[u]), u - start) for u in range(start, stop)])
        cols = np.concatenate([seen[u] for u in range(start, stop)])
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
        out[start:stop] = torch.topk(scores, K, dim=1).indices.numpy()
    return out, time.perf_counter() - started


def overlap(found: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(mean share of each row's items found in the other, share of rows with identical ordered lists)."""
    from pipeline.rank import overlap_recall

    return overlap_recall(found, exact), float(np.mean(np.all(found == exact, axis=1)))


def compare(name: str, n_users: int, n_items: int, dim: int, seen, chunk: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    user_vectors = rng.standard_normal((n_users, dim), dtype=np.float32)
    item_vectors = rng.standard_normal((n_items, dim), dtype=np.float32)
    seen_per_user = np.array([len(s) for s in seen])
    print(
        f"\n(a) {name}: {n_users:,} users x {n_items:,} items, d = {dim}, top-{K}, "
        f"seen items per user mean {seen_per_user.mean():.1f} / max {seen_per_user.max()}",
        flush=True,
    )
    faiss_items, build_s, search_s = faiss_top(user_vectors, item_vectors, seen)
    print(
        f"  rank path (FAISS IndexFlatIP + top_unseen): build {build_s:.2f} s, "
        f"search+filter {search_s:.2f} s, total {build_s + search_s:.2f} s",
        flush=True,
    )
    torch_items, torch_s = torch_top(user_vectors, item_vectors, seen, chunk)
    print(f"  torch matmul + mask + topk (chunks of {chunk:,} users): {torch_s:.2f} s", flush=True)
    print(f"  ratio rank path / torch: {(build_s + search_s) / torch_s:.2f}")
    shared, identical = overlap(faiss_items, torch_items)
    leaked = sum(np.isin(faiss_items[u], seen[u]).any() for u in range(n_users))
    print(
        f"  top-{K} overlap: {shared:.6f} mean, identical ordered lists {identical:.4f}; "
        f"users with a seen item in the rank path's list: {leaked}"
    )
    print(f"  peak RSS so far {peak_rss_gb():.2f} GB", flush=True)


def mixture(n: int, centers: np.ndarray, spread: float, rng) -> np.ndarray:
    """n points: a random mixture component's centre plus isotropic noise of std `spread`."""
    component = rng.integers(0, len(centers), n)
    points = centers[component]
    points += spread * rng.standard_normal(points.shape, dtype=np.float32)
    return points


def ivf_recall(
    n_items: int,
    n_queries: int,
    dim: int,
    n_components: int,
    spread: float,
    nlist: int,
    nprobes: list[int],
    seed: int,
) -> None:
    from pipeline.config import RankConfig
    from pipeline.rank import item_index, overlap_recall

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_components, dim), dtype=np.float32)
    item_vectors = mixture(n_items, centers, spread, rng)
    queries = mixture(n_queries, centers, spread, rng)
    print(
        f"\n(b) IVF recall@{K} vs exact, {n_items:,} items x d = {dim} from a Gaussian mixture of "
        f"{n_components:,} N(0, I) centres + N(0, {spread}^2 I) noise; {n_queries:,} queries from the "
        f"same mixture; inner product, no seen items",
        flush=True,
    )
    started = time.perf_counter()
    exact = item_index(item_vectors, RankConfig(index="exact"))
    built = time.perf_counter()
    _, exact_items = exact.search(queries, K)
    searched = time.perf_counter()
    print(f"  exact (IndexFlatIP): build {built - started:.2f} s, search {searched - built:.2f} s")
    del exact

    started = time.perf_counter()
    ivf = item_index(item_vectors, RankConfig(index="ivf", nlist=nlist, nprobe=1))
    build_s = time.perf_counter() - started
    print(
        f"  IVF (IndexIVFFlat, nlist {ivf.nlist:,}): build (k-means train + add) {build_s:.2f} s",
        flush=True,
    )
    print(f"  {'nprobe':>6} | {'recall@20':>9} | {'search s':>8} | vs exact search")
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        started = time.perf_counter()
        _, found = ivf.search(queries, K)
        seconds = time.perf_counter() - started
        recall = overlap_recall(found, exact_items)
        print(
            f"  {nprobe:>6} | {recall:>9.4f} | {seconds:>8.3f} | "
            f"{(searched - built) / seconds:.1f}x faster",
            flush=True,
        )
    print(f"  peak RSS so far {peak_rss_gb():.2f} GB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=192, help="d for (a); 3 x 64 like LIRDRec")
    parser.add_argument("--big-items", type=int, default=1_000_000)
    parser.add_argument("--big-users", type=int, default=10_000)
    parser.add_argument("--ivf-items", type=int, default=1_000_000)
    parser.add_argument("--ivf-dim", type=int, default=64)
    parser.add_argument("--ivf-queries", type=int, default=2_000)
    parser.add_argument("--ivf-components", type=int, default=2_000)
    parser.add_argument("--spread", type=float, default=1.0, help="mixture noise std")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists (the config default)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--cases", nargs="+", default=["clothing", "big", "ivf"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss
    import torch

    print(
        f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}; "
        f"cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} at start "
        f"(a shared machine)"
    )
    started = time.perf_counter()
    if "clothing" in args.cases:
        n_users, n_items, seen = clothing_seen()
        compare(
            "Amazon Clothing (seen sets from clothing.inter)",
            n_users,
            n_items,
            args.dim,
            seen,
            chunk=4096,
            seed=args.seed,
        )
    if "big" in args.cases:
        seen = random_seen(args.big_users, args.big_items, 7, args.seed)
        compare(
            "10^6-item catalog",
            args.big_users,
            args.big_items,
            args.dim,
            seen,
            chunk=256,
            seed=args.seed,
        )
    if "ivf" in args.cases:
        ivf_recall(
            args.ivf_items,
            args.ivf_queries,
            args.ivf_dim,
            args.ivf_components,
            args.spread,
            args.nlist,
            args.nprobe,
            args.seed,
        )
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s, peak RSS {peak_rss_gb():.2f} GB, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
