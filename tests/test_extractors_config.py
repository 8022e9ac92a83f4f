"""Caption/embed/modality settings reject bad values naming the field; keys are stable and sensitive."""

from __future__ import annotations

import pytest

from extractors.base import stable_key
from extractors.config import CaptionConfig, EmbedConfig, ModalityConfig, default_modalities


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CaptionConfig(backend="gpt"), r"\[caption\] backend"),
        (lambda: CaptionConfig(on_load_failure="ignore"), r"\[caption\] on_load_failure"),
        (lambda: CaptionConfig(batch_size=0), r"\[caption\] batch_size"),
        (lambda: CaptionConfig(dtype="int3"), r"\[caption\] dtype"),
        (lambda: CaptionConfig(backend="openai"), r"\[caption\] base_url"),
        (lambda: EmbedConfig(backend="tfidf"), r"\[embed\] backend"),
        (lambda: EmbedConfig(max_seq_length=0), r"\[embed\] max_seq_length"),
        (lambda: EmbedConfig(max_retries=-1), r"\[embed\] max_retries"),
        (lambda: ModalityConfig(source="audio"), r"\[modalities\] source"),
    ],
)
def test_bad_values_name_the_field(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_defaults_and_pydantic_embedding() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError

    class Holder(BaseModel):
        model_config = ConfigDict(extra="forbid")
        caption: CaptionConfig = CaptionConfig()
        modalities: dict[str, ModalityConfig] = {}

    holder = Holder.model_validate(
        {"caption": {"backend": "descriptor"}, "modalities": {"t": {"source": "text"}}}
    )
    assert holder.caption.backend == "descriptor" and holder.modalities["t"].embedder is None
    with pytest.raises(ValidationError, match="promt"):
        Holder.model_validate({"caption": {"promt": "typo"}})
    assert set(default_modalities()) == {"caption", "text"}


def test_keys_are_stable_and_change_with_output_affecting_settings() -> None:
    key = stable_key("transformers", "org/Model-1B", {"prompt": "p", "max_new_tokens": 8})
    assert key == stable_key("transformers", "org/Model-1B", {"max_new_tokens": 8, "prompt": "p"})
    assert key.startswith("transformers-Model-1B-")
    assert key != stable_key("transformers", "org/Model-1B", {"prompt": "q", "max_new_tokens": 8})
    assert stable_key("x", "/weird path/with spaces!", {}).split("-")[1] == "with"
