"""Tiny random-weight vision-language checkpoints of each supported family, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "smolvlm", "blip")

_WORDS = [f"w{i}" for i in range(160)] + list("abcdefghijklmnopqrstuvwxyz.,:!?")

# Chat templates in the shape of the real checkpoints' ones (shortened), so the captioner's prompt
# building runs the same code path as with downloaded weights.
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _tokenizer(special_tokens: list[str], chat_template: str | None):
    """A word-level tokenizer over a tiny vocabulary plus the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(base + _WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=special_tokens,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _text_config(vocab_size: int, **extra) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **extra,
    )


def _qwen(folder: Path, version: str) -> None:
    import transformers

    specials = [
        "<|image_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|im_start|>",
        "<|im_end|>",
    ]
    tokenizer = _tokenizer(specials, _QWEN_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config_class, model_class = {
        "qwen2_vl": (transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration),
        "qwen2_5_vl": (
            transformers.Qwen2_5_VLConfig,
            transformers.Qwen2_5_VLForConditionalGeneration,
        ),
    }[version]
    vision = dict(
        depth=1,
        embed_dim=32,
        hidden_size=32,
        num_heads=4,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
        out_hidden_size=32,
        intermediate_size=64,
    )
    config = config_class(
        text_config=_text_config(
            len(tokenizer), rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}
        ),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    image_processor = transformers.Qwen2VLImageProcessorPil(
        min_pixels=28 * 28 * 4, max_pixels=56 * 56
    )
    _save(
        folder,
        model_class(config),
        image_processor,
        tokenizer,
        "Qwen2VLProcessor" if version == "qwen2_vl" else "Qwen2_5_VLProcessor",
        {},
    )


def _llava(folder: Path) -> None:
    import transformers

    tokenizer = _tokenizer(["<image>"], _LLAVA_TEMPLATE)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
        projection_dim=32,
    )
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**vision),
        text_config=transformers.LlamaConfig(**_text_config(len(tokenizer))),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=4,
        vision_feature_layer=-1,
    )
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size=28)
    _save(
        folder,
        transformers.LlavaForConditionalGeneration(config),
        image_processor,
        tokenizer,
        "LlavaProcessor",
        {
            "patch_size": 14,
            "vision_feature_select_strategy": "default",
            "num_additional_image_tokens": 1,
        },
    )


def _idefics(folder: Path, version: str) -> None:
    import transformers

    row_col = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = [
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
        "<video>",
        "<|im_start|>",
        *row_col,
    ]
    tokenizer = _tokenizer(specials, _IDEFICS_TEMPLATE)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
    )
    config_class, model_class, processor_class = {
        "idefics3": (
            transformers.Idefics3Config,
            transformers.Idefics3ForConditionalGeneration,
            "Idefics3Processor",
        ),
        "smolvlm": (
            transformers.SmolVLMConfig,
            transformers.SmolVLMForConditionalGeneration,
            "SmolVLMProcessor",
        ),
    }[version]
    config = config_class(
        vision_config=vision,
        text_config=_text_config(len(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    image_processor_class = (
        transformers.Idefics3ImageProcessorPil
        if version == "idefics3"
        else transformers.SmolVLMImageProcessorPil
    )
    image_processor = image_processor_class(
        do_image_splitting=False, size={"longest_edge": 28}, max_image_size={"longest_edge": 28}
    )
    _save(
        folder,
        model_class(config),
        image_processor,
        tokenizer,
        processor_class,
        {"image_seq_len": 1},
    )


def _blip(folder: Path) -> None:
    import transformers

    tokenizer = _tokenizer([], None)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        sep_token_id=3,
        eos_token_id=3,
        encoder_hidden_size=32,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
        projection_dim=32,
    )
    config = transformers.BlipConfig(
        text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32
    )
    image_processor = transformers.BlipImageProcessorPil(size={"height": 28, "width": 28})
    _save(
        folder,
        transformers.BlipForConditionalGeneration(config),
        image_processor,
        tokenizer,
        "BlipProcessor",
        {},
    )


def _save(
    folder: Path, model, image_processor, tokenizer, processor_class: str, processor_kwargs: dict
) -> None:
    """Write weights, tokenizer, image processor and processor config as a hub checkpoint lays them out."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    processor_config = {"processor_class": processor_class, **processor_kwargs}
    (folder / "processor_config.json").write_text(json.dumps(processor_config, indent=2))
    if tokenizer.chat_template is not None:
        (folder / "chat_template.jinja").write_text(tokenizer.chat_template)


def build_tiny_vlm(family: str, folder: Path, seed: int = 0) -> Path:
    """Build a random-weight checkpoint of `family` (one of FAMILIES) in `folder`; returns the folder."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny VLM family {family!r}; expected one of {FAMILIES}")
    torch.manual_seed(seed)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        _qwen(folder, family)
    elif family == "llava":
        _llava(folder)
    elif family in ("idefics3", "smolvlm"):
        _idefics(folder, family)
    else:
        _blip(folder)
    return folder
