"""LIRDRec: shapes, the PWC schedule in closed form, theta copying, learning, new-item vectors."""

import dataclasses

import numpy as np
import pytest
import scipy.fft
import torch

from model.build import build_model
from model.config import TrainConfig
from model.data import RecData
from model.encode import catalog_encoder, encode_new_items
from model.lirdrec import LIRDRec, dct_rows, idct_rows, pwc_attention
from model.train import train
from tests.support.synthetic import planted_data

# float32 pinned: these tests compare computations to 1e-4, and "auto" takes bfloat16 on a CPU
# that runs it natively (AVX512-BF16, AMX)
CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=15, patience=15,
                     batch_size=64, device="cpu", topk=(5, 10, 20), feature_dtype="float32")


def build(data: RecData, config: TrainConfig = CONFIG, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(config, data, torch.device("cpu"), log=lambda _: None)


def test_forward_shapes_for_any_number_of_modalities():
    for dims in ({"text": 6}, {"image": 16, "text": 8}, {"caption": 5, "image": 7, "text": 3}):
        data = planted_data(dims=dims)
        users, items = build(data)()
        streams = len(dims) + 1
        assert users.shape == (data.n_users, streams * 8)  # (U, S*d)
        assert items.shape == (data.n_items, streams * 8)  # (I, S*d)


@pytest.mark.parametrize("n", [1, 4, 5, 384])
def test_dct_and_inverse_match_scipy(n):
    x = np.random.default_rng(n).normal(size=(3, n))
    np.testing.assert_allclose(dct_rows(torch.tensor(x)).numpy(),
                               scipy.fft.dct(x, type=2, norm="ortho", axis=1), atol=1e-12)
    np.testing.assert_allclose(idct_rows(torch.tensor(x)).numpy(),
                               scipy.fft.idct(x, type=2, norm="ortho", axis=1), atol=1e-12)


def test_shared_stream_equals_an_encoder_on_the_dct_of_the_features():
    """The fused computation on raw features gives what SPEC section 2 writes: the shared
    encoder applied to concat_m DCT(x_m)."""
    data = planted_data(dims={"image": 16, "text": 7})
    model = build(data)
    transformed = np.concatenate([scipy.fft.dct(data.features[name], type=2, norm="ortho",
                                                axis=1) for name in data.modalities], axis=1)
    expected = model.shared_encoder(torch.from_numpy(transformed.astype(np.float32)))
    streams = model.item_streams()
    torch.testing.assert_close(streams[-1], expected, rtol=1e-4, atol=1e-5)
    own = model.encoders[0](torch.from_numpy(data.features["image"]))
    torch.testing.assert_close(streams[0], own, rtol=1e-4, atol=1e-5)


def test_pwc_weights_follow_the_closed_form():
    model = build(planted_data())
    ratio0 = CONFIG.decay_weight / (1 - CONFIG.decay_weight)
    for epoch in range(1, 16):
        model.start_epoch(epoch)
        ratio = ratio0 * CONFIG.decay_base ** (epoch * (epoch + 1) / 2)
        assert model.w1.item() == pytest.approx(ratio / (1 + ratio), rel=1e-9)
        assert model.w2.item() == pytest.approx(1 / (1 + ratio), rel=1e-9)
    assert model.w1.item() < 1e-4  # after 15 epochs the scorers no longer count


def test_theta_becomes_the_last_training_attention():
    model = build(planted_data())
    model.start_epoch(1)
    theta_before = model.theta.detach().clone()
    model.train()
    model()
    with torch.no_grad():
        user_rows, _ = model.propagated_rows()
        blocks = user_rows.view(model.n_users, model.n_streams, model.d)
        f_att = torch.cat([s(blocks[:, k]) for k, s in enumerate(model.scorers)], dim=1)
        expected = pwc_attention(f_att, model.theta, model.w1, model.w2)
    torch.testing.assert_close(model.last_attention, expected)
    model.eval()
    model()  # evaluation passes do not count as "the last training forward"
    torch.testing.assert_close(model.last_attention, expected)
    assert torch.equal(model.theta, theta_before)
    model.start_epoch(2)
    torch.testing.assert_close(model.theta.detach(), expected)


def test_lirdrec_learns_a_planted_dataset(tmp_path):
    data = planted_data(seed=1)
    result = train(CONFIG, data, tmp_path, log=lambda _: None)
    # 8 of a user's 10 items are masked; random ranking finds ~5/32 of the held-out ones in 5.
    assert result.metrics["test"]["recall@5"] > 0.5


def test_bfloat16_features_give_nearly_the_same_vectors():
    data = planted_data()
    users32, items32 = build(data, dataclasses.replace(CONFIG, feature_dtype="float32"))()
    users16, items16 = build(data, dataclasses.replace(CONFIG, feature_dtype="bfloat16",
                                                       feature_dtype_force=True))()
    assert items16.dtype == torch.float32
    torch.testing.assert_close(items16, items32, rtol=0.05, atol=0.02)
    torch.testing.assert_close(users16, users32, rtol=0.05, atol=0.02)


def test_new_item_vector_equals_the_cold_catalog_items_vector():
    """Item 39 has no interaction: encoding it as NEW against a catalog without it gives the
    vector the full model gives it."""
    full = planted_data(seed=2)
    keep = lambda pairs: pairs[pairs[:, 1] != 39]  # noqa: E731
    full = dataclasses.replace(full, train=keep(full.train), valid=keep(full.valid),
                               test=keep(full.test))
    model = build(full)
    _, items = model()
    catalog = RecData(full.n_users, 39, full.train, full.valid, full.test,
                      {name: x[:39] for name, x in full.features.items()})
    small = build(catalog)
    small.load_state_dict(model.state_dict())
    arrays = catalog_encoder(small, catalog.features)  # what the run folder keeps
    encoder = LIRDRec.encoder_only(CONFIG, full.n_users,
                                   [x.shape[1] for _, x in sorted(catalog.features.items())])
    encoder.load_state_dict(model.state_dict())
    vectors = encode_new_items(encoder, arrays,
                               {name: x[39:] for name, x in full.features.items()},
                               {"image": 0.5, "text": 0.5}, CONFIG.knn_k)
    assert vectors.shape == (1, items.shape[1])
    np.testing.assert_allclose(vectors[0], items[39].detach().numpy(), rtol=1e-4, atol=1e-5)
