"""LIRDRec: item vectors learnt directly from multimodal features, with no item ID embedding.

Paper: Zhou et al., "Learning Item Representations Directly from Multimodal Features for
Effective Recommendation", arXiv 2505.04960 (2025); what this computes is written down in
../shared/SPEC-lirdrec.md (section numbers below refer to it). Shapes: U users, I items,
M modalities with D_m features each, d = embedding_size, S = M + 1 streams (the M modalities,
then the shared DCT stream); user and item vectors are (U, S*d) and (I, S*d).

Forward, top to bottom:
  1. item streams: one encoder per modality on x_m, one shared encoder on concat_m DCT(x_m) (2)
  2. user streams: one free (U, d) preference matrix per stream (users keep ID embeddings)   (2)
  3. each stream's [users; items] rows L2-normalised, streams concatenated, propagated on the
     normalised user-item graph, layers SUMMED                                                (3)
  4. users: progressive weight copying (PWC) attention over their S blocks                    (4)
  5. items: h = r + A_mm^L r on the frozen kNN item-item graph                                (5)
Training: BPR + reg_weight * (mean(users^2) + mean(items^2)) (6). `start_epoch` applies the PWC
schedule. Not here: graph building (graph.py), training (train.py), new-item vectors (encode.py).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.gemm import DEFAULT, frozen_linear, plan_for
from model.graph import (
    CsrOperator,
    item_item_graph,
    knn_graphs,
    transpose_csr,
    user_item_adjacency,
)

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data import RecData


class FeatureEncoder(nn.Module):
    """x (I, D) -> (I, d): Linear(D, 4d) -> LeakyReLU -> Linear(4d, d, bias=False)."""

    def __init__(self, in_dim: int, d: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, 4 * d)
        self.out = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))  # (I, D) -> (I, d)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """What follows the first layer: (I, 4d) pre-activations -> (I, d)."""
        # in place: one (I, 4d) activation kept for backward instead of two (matters at 10^6 items)
        return self.out(F.leaky_relu(hidden, inplace=True))


class StreamScorer(nn.Module):
    """A user's block of one stream -> its PWC score: Linear(d, d/4) -> LeakyReLU -> Linear(d/4, 1)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        # in place: its gradient then reads its float output, which the next layer keeps anyway;
        # otherwise torch.compile saves a bool mask of its input, and inductor's CPU code stores
        # bool masks slowly: Baby's (19445, 16) layer took 1.45 ms a call instead of 0.014 ms
        # (2 AMD EPYC cores; tests/test_compile.py checks that the step saves no bool tensor)
        self.net = nn.Sequential(nn.Linear(d, d // 4), nn.LeakyReLU(inplace=True),
                                 nn.Linear(d // 4, 1))

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        return self.net(block)  # (U, d) -> (U, 1)


def _ortho_scale(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=dtype, device=device)
    scale[0] = math.sqrt(1.0 / n)
    return scale


def dct_rows(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis (= scipy.fft.dct(x, 2, norm="ortho")), via one FFT."""
    n = x.shape[-1]
    reordered = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)  # Makhoul's ordering
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    return (torch.fft.fft(reordered, dim=-1) * twiddle).real * _ortho_scale(n, x.dtype, x.device)


def idct_rows(y: torch.Tensor) -> torch.Tensor:
    """The inverse of dct_rows (orthonormal DCT-III = scipy.fft.idct(y, 2, norm="ortho"));
    differentiable, and its gradient is dct_rows of the incoming gradient.

    Makhoul's algorithm on half a spectrum: Z_k = (X_k - i X_{n-k}) e^{i pi k / 2n} is Hermitian,
    so its inverse FFT is irfft of k = 0..n/2, and the twiddle is applied in real arithmetic
    (fusable: torch.compile generates no code for complex tensors). Half the work of the full
    complex inverse: a (256, 4096) weight block's forward and backward in 6.2 ms against 10.1 ms
    eager, 4.6 against 9.2 compiled (2 Intel Xeon cores)."""
    n = y.shape[-1]
    half = n // 2 + 1
    plain = y / _ortho_scale(n, y.dtype, y.device)  # X_k
    mirrored = torch.cat([torch.zeros_like(plain[..., :1]), plain[..., 1:].flip(-1)],
                         dim=-1)[..., :half]  # X_{n-k}, with X_n = 0
    plain = plain[..., :half]
    angle = math.pi * torch.arange(half, dtype=y.dtype, device=y.device) / (2 * n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    spectrum = torch.complex(plain * cos + mirrored * sin, plain * sin - mirrored * cos)
    reordered = torch.fft.irfft(spectrum, n=n, dim=-1)  # even positions, then odd ones reversed
    evens, odds = reordered[..., : (n + 1) // 2], reordered[..., (n + 1) // 2:].flip(-1)
    odds = F.pad(odds, (0, evens.shape[-1] - odds.shape[-1]))  # odd n: one odd position fewer
    return torch.stack([evens, odds], dim=-1).flatten(-2)[..., :n]


def propagate_sum(adjacency: CsrOperator, rows: torch.Tensor, n_layers: int) -> torch.Tensor:
    """E_0 + A E_0 + ... + A^L E_0 (LightGCN propagation with the layers summed; A symmetric)."""
    total, layer = rows, rows
    for index in range(n_layers):
        layer = adjacency(layer)
        # in place after the first sum: one (U+I, S*d) temporary fewer per layer
        total = total + layer if index == 0 else total.add_(layer)
    return total


def pwc_attention(f_att: torch.Tensor, theta: torch.Tensor, w1: torch.Tensor,
                  w2: torch.Tensor) -> torch.Tensor:
    """a = softmax(w1 * f_att + w2 * theta) over the streams, (U, S)."""
    return torch.softmax(w1 * f_att + w2 * theta, dim=1)


def bpr_loss(user_rows: torch.Tensor, positive_rows: torch.Tensor,
             negative_rows: torch.Tensor) -> torch.Tensor:
    """mean(-log sigmoid(s(u, i+) - s(u, i-))) over the batch; rows are (B, D)."""
    margin = (user_rows * positive_rows).sum(1) - (user_rows * negative_rows).sum(1)  # (B,)
    return -F.logsigmoid(margin).mean()


def batch_bpr(user_vectors: torch.Tensor, item_vectors: torch.Tensor, users: torch.Tensor,
              positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """bpr_loss on the batch's rows, the positive and negative item rows gathered in one
    index_select: its backward is one index_add, not an index_put per indexing (at 200,000 items
    and a batch of 65,536: 0.12 s against 0.26 s forward and backward)."""
    item_rows = item_vectors.index_select(0, torch.cat([positives, negatives]))  # (2B, S*d)
    positive_rows, negative_rows = item_rows.split(len(positives))
    return bpr_loss(user_vectors.index_select(0, users), positive_rows, negative_rows)


def vector_regulariser(user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                       reg_weight: float) -> torch.Tensor:
    """reg_weight * (mean(U_all^2) + mean(I_all^2)) over ALL vectors: it does not see the batch."""
    return reg_weight * (user_vectors.square().mean() + item_vectors.square().mean())


class LIRDRec(nn.Module):
    """The model: frozen features and graphs in, (U, S*d) user and (I, S*d) item vectors out."""

    uses_features: ClassVar[bool] = True
    scores_new_items: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = True  # the regulariser does not see the batch (batch_free_loss)
    compiles: ClassVar[bool] = True  # train.compile "auto" may compile its forward (compiled.py)

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> LIRDRec:
        """The graphs built from `data` (SPEC section 5), the features on `device` in
        `config.feature_dtype`; `model.neighbours` keeps each modality's (I, k) kNN lists."""
        from model.config import resolve_mm_weights
        from model.dtype import run_feature_dtype

        weights = resolve_mm_weights(config, data.modalities)
        started = time.perf_counter()
        neighbours = knn_graphs(config, data.features, log)
        mm_adjacency = item_item_graph(neighbours, weights, data.n_items)
        log(f"item graph: {len(weights)} modalities, k={config.knn_k}, {config.knn_method}, "
            f"{mm_adjacency.values().numel()} edges, {time.perf_counter() - started:.1f}s")
        dtype = run_feature_dtype(config, device, log).torch_dtype
        # torch.from_numpy shares memory: float32 features on the CPU are not copied.
        features = [torch.from_numpy(data.features[name]).to(device=device, dtype=dtype)
                    for name in data.modalities]
        adjacency = user_item_adjacency(data.n_users, data.n_items, data.train)
        model = cls(data.n_users, features, adjacency.to(device), mm_adjacency.to(device),
                    embedding_size=config.embedding_size, n_ui_layers=config.n_ui_layers,
                    n_mm_layers=config.n_mm_layers, decay_weight=config.decay_weight,
                    decay_base=config.decay_base, reg_weight=config.reg_weight).to(device)
        model.neighbours: dict[str, np.ndarray] = neighbours
        model.gemm_plans = [plan_for(x, 8 * config.embedding_size, log) for x in features]
        return model

    @classmethod
    def encoder_only(cls, config: TrainConfig, n_users: int, feature_dims: list[int]) -> LIRDRec:
        """The model without a catalog (no features, empty graphs): load a run's best weights
        into it to encode new items' features (model/encode.py)."""
        dtype = torch.float32  # a few new items: no need for the training dtype's speed

        def empty_graph(size: int) -> torch.Tensor:
            with warnings.catch_warnings():  # "CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csr_tensor(
                    torch.zeros(size + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                    torch.zeros(0), (size, size), check_invariants=True)

        return cls(n_users, [torch.empty(0, dim, dtype=dtype) for dim in feature_dims],
                   empty_graph(n_users), empty_graph(0), embedding_size=config.embedding_size,
                   n_ui_layers=config.n_ui_layers, n_mm_layers=config.n_mm_layers,
                   decay_weight=config.decay_weight, decay_base=config.decay_base,
                   reg_weight=config.reg_weight)

    def __init__(self, n_users: int, features: list[torch.Tensor], ui_adjacency: torch.Tensor,
                 mm_adjacency: torch.Tensor, *, embedding_size: int, n_ui_layers: int,
                 n_mm_layers: int, decay_weight: float, decay_base: float,
                 reg_weight: float) -> None:
        super().__init__()
        d = embedding_size
        self.n_users, self.n_items = n_users, features[0].shape[0]
        self.n_streams = len(features) + 1
        self.d, self.n_ui_layers, self.n_mm_layers = d, n_ui_layers, n_mm_layers
        self.decay_base, self.reg_weight = decay_base, reg_weight
        # Frozen inputs: non-persistent buffers move with .to(device) but stay out of checkpoints.
        for m, x in enumerate(features):
            self.register_buffer(f"features_{m}", x, persistent=False)  # (I, D_m)
        self.ui_graph = CsrOperator(ui_adjacency)  # (U+I, U+I), symmetric
        self.item_item = CsrOperator(mm_adjacency, transpose_csr(mm_adjacency))  # (I, I)

        self.encoders = nn.ModuleList(FeatureEncoder(x.shape[1], d) for x in features)
        self.shared_encoder = FeatureEncoder(sum(x.shape[1] for x in features), d)
        self.user_preference = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, d)))
            for _ in range(self.n_streams))
        self.scorers = nn.ModuleList(StreamScorer(d) for _ in range(self.n_streams))
        self.theta = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, self.n_streams)))
        # PWC state, in checkpoints: the weights of scorer vs theta, and the last attention.
        self.register_buffer("w1", torch.tensor(decay_weight, dtype=torch.float64))
        self.register_buffer("w2", torch.tensor(1.0 - decay_weight, dtype=torch.float64))
        self.register_buffer("last_attention", torch.zeros(n_users, self.n_streams))
        self.gemm_plans = [DEFAULT] * len(features)  # which GEMM runs each wide product (gemm.py)

    def item_streams(self, features: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Each stream's item rows from the features (default: the catalog's): S tensors (I, d).

        The shared stream's first layer acts on concat_m DCT(x_m) (section 2). The orthonormal
        DCT is linear, so DCT(x) W^T = x IDCT(W)^T: it runs on the raw features with its weight
        rows inverse-transformed (an FFT of a (4d, D_m) matrix), fused with modality m's own
        first layer into one (I, D_m) x (D_m, 8d) product (on the faster GEMM library here,
        model/gemm.py). Same numbers as transforming the
        features, without storing a DCT copy of them. Features may be bfloat16
        (TrainConfig.feature_dtype): the wide products run in their dtype, the rest in float32.
        """
        plans = self.gemm_plans if features is None else [DEFAULT] * len(features)
        if features is None:
            features = [getattr(self, f"features_{m}") for m in range(self.n_streams - 1)]
        shared = self.shared_encoder.hidden
        shared_hidden, offset, rows = shared.bias, 0, []
        for encoder, x, plan in zip(self.encoders, features, plans, strict=True):
            shared_block = idct_rows(shared.weight[:, offset:offset + x.shape[1]])  # (4d, D_m)
            offset += x.shape[1]
            weight = torch.cat([encoder.hidden.weight, shared_block]).to(x.dtype)  # (8d, D_m)
            own, shared_part = frozen_linear(x, weight, plan).float().split(4 * self.d, dim=1)
            rows.append(encoder.head(own + encoder.hidden.bias))  # (I, d)
            shared_hidden = shared_hidden + shared_part  # (I, 4d)
        return rows + [self.shared_encoder.head(shared_hidden)]

    def propagated_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3: normalised streams propagated on the user-item graph, (U, S*d) and (I, S*d)."""
        item_rows = torch.cat([F.normalize(r, dim=1) for r in self.item_streams()], dim=1)
        user_rows = torch.cat([F.normalize(p, dim=1) for p in self.user_preference], dim=1)
        rows = torch.cat([user_rows, item_rows])  # (U+I, S*d)
        rows = propagate_sum(self.ui_graph, rows, self.n_ui_layers)  # (U+I, S*d)
        # split, not two slices: its backward is one concatenation, not two zero-filled copies
        return rows.split([self.n_users, self.n_items])

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_rows, item_rows = self.propagated_rows()  # (U, S*d), (I, S*d)
        blocks = user_rows.view(self.n_users, self.n_streams, self.d)  # (U, S, d)
        f_att = torch.cat([scorer(blocks[:, k]) for k, scorer in enumerate(self.scorers)],
                          dim=1)  # (U, S)
        attention = pwc_attention(f_att, self.theta, self.w1, self.w2)  # (U, S)
        if self.training:  # PWC copies the last TRAINING attention into theta (start_epoch)
            self.last_attention.copy_(attention.detach())
        users = (attention.unsqueeze(-1) * blocks).reshape(self.n_users, -1)  # (U, S*d)
        items = item_rows + self.item_graph(item_rows)  # (I, S*d)
        return users, items

    def compile_size(self) -> int:
        """Floats of propagated rows a forward pass moves, (U+I) * S*d: what compiling saves on."""
        return (self.n_users + self.n_items) * self.n_streams * self.d

    def item_graph(self, item_rows: torch.Tensor) -> torch.Tensor:
        """A_mm^L r, (I, S*d)."""
        for _ in range(self.n_mm_layers):
            item_rows = self.item_item(item_rows)
        return item_rows

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> None:
        """PWC schedule at the start of epoch e = 1, 2, ...: w1 <- w1 * base**e, renormalise
        w1 + w2 = 1, and (from epoch 2 on) copy the last training attention into theta."""
        w1 = self.w1 * self.decay_base**epoch
        total = w1 + self.w2
        self.w1.copy_(w1 / total)
        self.w2.copy_(self.w2 / total)
        if epoch > 1:
            self.theta.copy_(self.last_attention)

    def batch_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                   users: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> torch.Tensor:
        """BPR on the batch plus reg_weight * (mean(users^2) + mean(items^2)) over ALL vectors."""
        return (self.ranking_loss(user_vectors, item_vectors, users, positives, negatives)
                + self.batch_free_loss(user_vectors, item_vectors))

    def fitted(self) -> dict:
        """Nothing is chosen while building (the trainer selects the epoch)."""
        return {}

    def ranking_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                     users: torch.Tensor, positives: torch.Tensor,
                     negatives: torch.Tensor) -> torch.Tensor:
        """batch_loss's part that sees the batch: the mean BPR over its rows."""
        return batch_bpr(user_vectors, item_vectors, users, positives, negatives)

    def batch_free_loss(self, user_vectors: torch.Tensor,
                        item_vectors: torch.Tensor) -> torch.Tensor:
        """batch_loss's part that does not: the regulariser over all vectors."""
        return vector_regulariser(user_vectors, item_vectors, self.reg_weight)
