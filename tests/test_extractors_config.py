"""Per-backend caption/embed settings, the extractor Protocols, and store keys pinned across versions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from extractors.base import BatchCaptioner, Captioner, Embedded, Embedder, stable_key
from extractors.config import (
    CaptionConfig,
    DescriptorCaptionConfig,
    EmbedConfig,
    ModalityConfig,
    OpenAICaptionConfig,
    OpenAIEmbedConfig,
    SentenceTransformersEmbedConfig,
    TransformersCaptionConfig,
    default_modalities,
)
from extractors.descriptor import DescriptorCaptioner
from extractors.openai_backends import OpenAICaptioner, OpenAIEmbedder
from extractors.st_embedder import embedder_key
from extractors.transformers_captioner import caption_key

NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens: these tests never send a request


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TransformersCaptionConfig(on_load_failure="ignore"), r"\[caption\] on_load_failure"),
        (lambda: TransformersCaptionConfig(batch_size=0), r"\[caption\] batch_size"),
        (lambda: TransformersCaptionConfig(dtype="int3"), r"\[caption\] dtype"),
        (lambda: TransformersCaptionConfig(model=" "), r"\[caption\] model is empty"),
        (lambda: OpenAICaptionConfig(base_url=""), r"\[caption\] base_url is empty"),
        (lambda: OpenAICaptionConfig(base_url=NOWHERE, max_retries=-1), r"\[caption\] max_retries"),
        (lambda: DescriptorCaptionConfig(batch_size=0), r"\[caption\] batch_size"),
        (lambda: SentenceTransformersEmbedConfig(max_seq_length=0), r"\[embed\] max_seq_length"),
        (lambda: OpenAIEmbedConfig(base_url=NOWHERE, max_retries=-1), r"\[embed\] max_retries"),
        (lambda: OpenAIEmbedConfig(base_url=NOWHERE, dimensions=0), r"\[embed\] dimensions"),
        (lambda: ModalityConfig(source="audio"), r"\[modalities\] source"),
    ],
)
def test_bad_values_name_the_field(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_an_endpoint_backend_needs_its_base_url() -> None:
    with pytest.raises(TypeError, match="base_url"):
        OpenAICaptionConfig()  # type: ignore[call-arg]


class Holder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    caption: CaptionConfig = TransformersCaptionConfig()
    embed: EmbedConfig = SentenceTransformersEmbedConfig()
    modalities: dict[str, ModalityConfig] = {}


def test_the_backend_tag_picks_the_class_and_defaults_to_the_local_backends() -> None:
    holder = Holder.model_validate(
        {
            "caption": {"backend": "descriptor", "batch_size": 2},
            "embed": {"model": "my/embedder"},
            "modalities": {"t": {"source": "text", "embedder": {"backend": "openai", "base_url": "u"}}},
        }
    )
    assert holder.caption == DescriptorCaptionConfig(batch_size=2)
    assert holder.embed == SentenceTransformersEmbedConfig(model="my/embedder")
    assert holder.modalities["t"].embedder == OpenAIEmbedConfig(base_url="u")
    assert isinstance(Holder.model_validate({"caption": {"model": "m"}}).caption, TransformersCaptionConfig)
    assert set(default_modalities()) == {"caption", "text"}


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ({"caption": {"backend": "descriptor", "model": "m"}}, ("caption", "descriptor", "model")),
        ({"caption": {"promt": "typo"}}, ("caption", "transformers", "promt")),
        ({"embed": {"backend": "openai", "base_url": "u", "device": "cpu"}}, ("embed", "openai", "device")),
        ({"caption": {"backend": "gpt"}}, ("caption",)),
    ],
)
def test_a_key_of_another_backend_or_an_unknown_backend_is_an_error(raw, location) -> None:
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate(raw)
    assert caught.value.errors()[0]["loc"] == location


def test_every_backend_meets_its_protocol_without_loading_a_model() -> None:
    descriptor = DescriptorCaptioner(batch_size=5)
    openai = OpenAICaptioner(OpenAICaptionConfig(base_url=NOWHERE, batch_size=2, concurrency=6))
    embedder = OpenAIEmbedder(OpenAIEmbedConfig(base_url=NOWHERE, dimensions=16))  # no probe
    assert isinstance(descriptor, Captioner) and isinstance(openai, Captioner)
    assert isinstance(embedder, Embedder) and embedder.dim == 16
    assert (descriptor.preferred_batch, openai.preferred_batch) == (5, 6)  # keeps 6 requests busy
    assert "not a multimodal LLM" in descriptor.provenance["note"]
    assert openai.provenance["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, not a key
    assert embedder.name == "openai:sentence-transformers/all-MiniLM-L6-v2"


class _Picky(BatchCaptioner):
    """Fails any batch holding a black image; captions the others by their size."""

    key, name, provenance, preferred_batch = "picky", "picky", {}, 4

    def caption(self, images: list[Image.Image]) -> list[str]:
        if any(image.getpixel((0, 0)) == (0, 0, 0) for image in images):
            raise RuntimeError("black image")
        return [f"{image.width} wide" if image.width > 1 else "" for image in images]


def test_batch_captioners_isolate_the_failing_image() -> None:
    images = [Image.new("RGB", (3, 2), (9, 9, 9)), Image.new("RGB", (4, 2)), Image.new("RGB", (1, 1), (1, 1, 1))]
    assert _Picky().caption_each(images) == [
        ("3 wide", None),
        (None, "captioning failed: RuntimeError: black image"),
        (None, "empty caption"),
    ]


def test_embedded_unpacks_into_vectors_and_flags() -> None:
    vectors, truncated = Embedded(np.zeros((2, 3), np.float32), [False, True])
    assert vectors.shape == (2, 3) and truncated == [False, True]


# Store keys computed by the code before the per-backend configs (commit afbd86c): the same
# effective settings must keep naming the same store folders, or every existing store is orphaned.
PINNED_KEYS = {
    "descriptor": "descriptor-not-mllm-image-statistics-f2da73d01f63",
    "transformers default": "transformers-SmolVLM-256M-Instruct-d51b6e9c6af7",
    "transformers qwen": "transformers-Qwen2-VL-2B-Instruct-48b8bce679fa",
    "openai caption": "openai-qwen2-vl-dc1c4a0ef593",
    "openai caption llava": "openai-llava-60496de65ed3",
    "openai embed": "openai-text-embedding-3-small-42eaa943036f",
    "openai embed nomic": "openai-nomic-embed-text-0fcf7c1ad34d",
    "minilm": "sentence-transformers-all-MiniLM-L6-v2-758d6b632306",
    "minilm instruction": "sentence-transformers-all-MiniLM-L6-v2-d2994f7f2f2e",
    "minilm short id": "sentence-transformers-all-MiniLM-L6-v2-ca10e8952ae6",
}


def test_store_keys_are_those_of_earlier_versions() -> None:
    keys = {
        "descriptor": DescriptorCaptioner().key,
        "transformers default": caption_key(TransformersCaptionConfig()),
        "transformers qwen": caption_key(
            TransformersCaptionConfig(
                model="Qwen/Qwen2-VL-2B-Instruct", revision="abc", prompt="Name it.", max_new_tokens=32
            )
        ),
        "openai caption": OpenAICaptioner(OpenAICaptionConfig(base_url=NOWHERE, model="qwen2-vl")).key,
        "openai caption llava": OpenAICaptioner(
            OpenAICaptionConfig(
                base_url=NOWHERE, model="llava", prompt="p", max_new_tokens=10, image_detail_side=512
            )
        ).key,
        "openai embed": OpenAIEmbedder(
            OpenAIEmbedConfig(base_url=NOWHERE, model="text-embedding-3-small", dimensions=256)
        ).key,
        "openai embed nomic": OpenAIEmbedder(
            OpenAIEmbedConfig(
                base_url=NOWHERE,
                model="nomic-embed-text",
                dimensions=768,
                instruction="search_document: ",
                normalize=True,
                max_input_chars=1000,
            )
        ).key,
        # MiniLM truncates at 256 word pieces unless max_seq_length says otherwise
        "minilm": embedder_key(SentenceTransformersEmbedConfig(), 256),
        "minilm instruction": embedder_key(
            SentenceTransformersEmbedConfig(instruction="query: ", normalize=True, max_seq_length=128), 128
        ),
        "minilm short id": embedder_key(SentenceTransformersEmbedConfig(model="all-MiniLM-L6-v2"), 256),
    }
    assert keys == PINNED_KEYS


def test_keys_ignore_settings_that_do_not_change_the_output() -> None:
    one = OpenAICaptioner(OpenAICaptionConfig(base_url=NOWHERE, model="m"))
    other = OpenAICaptioner(
        OpenAICaptionConfig(base_url="http://elsewhere/v1", model="m", api_key_env=None, concurrency=9)
    )
    assert one.key == other.key
    assert caption_key(TransformersCaptionConfig()) == caption_key(
        TransformersCaptionConfig(batch_size=1, device="cpu", dtype="float32")
    )


def test_keys_are_stable_and_change_with_output_affecting_settings() -> None:
    key = stable_key("transformers", "org/Model-1B", {"prompt": "p", "max_new_tokens": 8})
    assert key == stable_key("transformers", "org/Model-1B", {"max_new_tokens": 8, "prompt": "p"})
    assert key.startswith("transformers-Model-1B-")
    assert key != stable_key("transformers", "org/Model-1B", {"prompt": "q", "max_new_tokens": 8})
    assert stable_key("x", "/weird path/with spaces!", {}).split("-")[1] == "with"
