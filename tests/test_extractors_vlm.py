"""Tiny random-weight checkpoints of every supported VLM family caption through one caption() call."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from extractors import hub
from extractors.base import ModelLoadError
from extractors.config import TransformersCaptionConfig
from extractors.factory import build_captioner
from tests.support.tiny_vlm import FAMILIES, build_tiny_vlm


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {family: build_tiny_vlm(family, root / family) for family in FAMILIES}


@pytest.fixture()
def images() -> list[Image.Image]:
    # different sizes and aspect ratios in one batch, as a real catalog has
    return [
        Image.new("RGB", (185, 278), (200, 30, 30)),
        Image.effect_noise((120, 60), 40).convert("RGB"),
        Image.new("RGB", (64, 64), (20, 200, 90)),
    ]


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_captions_a_mixed_batch(
    checkpoints: dict[str, Path], images: list[Image.Image], family: str
) -> None:
    from extractors.transformers_captioner import TransformersCaptioner

    config = TransformersCaptionConfig(model=str(checkpoints[family]), max_new_tokens=6, batch_size=3)
    captioner = TransformersCaptioner(config)
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(text, str) and text for text in captions)
    # left padding and per-image inputs are right: the batch gives what one-by-one calls give
    assert captions == [captioner.caption([image])[0] for image in images]
    assert captioner.key.startswith("transformers-" + family[:4])
    assert captioner.name == f"transformers:{checkpoints[family]}"


def test_video_processor_families_load_without_torchvision(checkpoints: dict[str, Path]) -> None:
    from transformers.utils import is_torchvision_available

    from extractors.transformers_captioner import load_processor

    if is_torchvision_available():
        pytest.skip("torchvision is installed: the workaround is not exercised")
    for family in ("qwen2_vl", "qwen2_5_vl", "smolvlm"):
        processor = load_processor(str(checkpoints[family]), None, local_only=True)
        assert processor.video_processor is None
        assert type(processor.image_processor).__name__.endswith("Pil")


def test_key_follows_prompt_and_tokens_not_batch_size(checkpoints: dict[str, Path]) -> None:
    from extractors.transformers_captioner import caption_key

    model = str(checkpoints["blip"])
    base = caption_key(TransformersCaptionConfig(model=model))
    assert base == caption_key(TransformersCaptionConfig(model=model, batch_size=1, device="cpu"))
    assert base != caption_key(TransformersCaptionConfig(model=model, prompt="Name the object."))
    assert base != caption_key(TransformersCaptionConfig(model=model, max_new_tokens=7))


def test_unloadable_vlm_fails_fast_with_local_weights_hint(offline) -> None:
    started = time.perf_counter()
    config = TransformersCaptionConfig(model="HuggingFaceTB/SmolVLM-256M-Instruct", on_load_failure="fail")
    with pytest.raises(ModelLoadError, match="set `model` to the checkpoint folder"):
        build_captioner(config)
    assert time.perf_counter() - started < 30  # no minutes of hub retries


def test_unloadable_vlm_falls_back_to_descriptor_with_warning(
    offline, caplog: pytest.LogCaptureFixture
) -> None:
    config = TransformersCaptionConfig(model="HuggingFaceTB/SmolVLM-256M-Instruct", on_load_failure="fallback")
    with caplog.at_level("WARNING"):
        built = build_captioner(config)
    assert built.captioner.key.startswith("descriptor-not-mllm")
    assert len(built.warnings) == 1 and "FALLING BACK to the descriptor" in built.warnings[0]
    assert "FALLING BACK" in caplog.text


def test_broken_local_checkpoint_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        build_captioner(TransformersCaptionConfig(model=str(tmp_path)))
