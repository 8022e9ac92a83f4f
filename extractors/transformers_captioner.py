"""Captioner over a local or hub vision-language model through transformers (Qwen2/2.5-VL, LLaVA, SmolVLM, BLIP)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from extractors.base import BatchCaptioner, ModelLoadError, stable_key
from extractors.config import TransformersCaptionConfig
from extractors.hub import LOCAL_WEIGHTS_HINT, folder_fingerprint, is_local_folder, local_files_only

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Families whose processors take one list of images per prompt rather than a flat list.
_NESTED_IMAGE_FAMILIES = ("idefics3", "smolvlm", "idefics2")


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _without_video_processor(processor_class: type) -> type:
    """`processor_class` minus its video sub-processor.

    transformers 5.x builds the Qwen2-VL and SmolVLM processors with a video processor that needs
    torchvision; without it, loading fails on `VIDEO_PROCESSOR_MAPPING`. Captioning never feeds
    videos, so the subclass drops that attribute and the processor works from the PIL image
    processor and the tokenizer alone.
    """
    attributes = [name for name in processor_class.get_attributes() if name != "video_processor"]
    return type(
        processor_class.__name__,
        (processor_class,),
        {"get_attributes": classmethod(lambda cls: list(attributes)), "video_processor": None},
    )


def load_processor(model: str, revision: str | None, local_only: bool) -> Any:
    """The model's processor; works without torchvision for families whose processor wants a video one."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils import is_torchvision_available

    options = {"revision": revision, "local_files_only": local_only}
    if is_torchvision_available():
        return transformers.AutoProcessor.from_pretrained(model, **options)
    model_type = transformers.AutoConfig.from_pretrained(model, **options).model_type
    class_name = PROCESSOR_MAPPING_NAMES.get(model_type)
    processor_class = getattr(transformers, class_name, None) if class_name else None
    if processor_class is None or "video_processor" not in processor_class.get_attributes():
        return transformers.AutoProcessor.from_pretrained(model, **options)
    # from_pretrained loads the sub-processors that get_attributes names, so the subclass's
    # constructor receives video_processor=None and none is looked for on disk. Public API only: the
    # private helpers under it have changed between 5.x releases.
    return _without_video_processor(processor_class).from_pretrained(
        model, **options, video_processor=None
    )


def _key_settings(config: TransformersCaptionConfig) -> dict[str, Any]:
    """What decides a transformers captioner's output: revision, prompt and decoding (not batch/device)."""
    return {
        "revision": config.revision,
        "prompt": config.prompt,
        "max_new_tokens": config.max_new_tokens,
        "decoding": "greedy",
        "weights": folder_fingerprint(config.model),
    }


def caption_key(config: TransformersCaptionConfig) -> str:
    """Key of a transformers captioner: model, revision, prompt and decoding settings (not batch/device)."""
    return stable_key("transformers", config.model, _key_settings(config))


class TransformersCaptioner(BatchCaptioner):
    """Batched, greedy captioning with any image-text-to-text model that transformers can load."""

    def __init__(self, config: TransformersCaptionConfig) -> None:
        import transformers

        self.config = config
        self.key = caption_key(config)
        self.name = f"transformers:{config.model}" + (
            f"@{config.revision}" if config.revision else ""
        )
        self.provenance = {"backend": "transformers", "model": config.model, **_key_settings(config)}
        self.preferred_batch = config.batch_size
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        local_only = local_files_only(config.model)
        try:
            self.processor = load_processor(config.model, config.revision, local_only)
            # On CUDA with device "auto", accelerate places the weights (across GPUs when one is too small).
            placement = (
                {"device_map": "auto"} if config.device == "auto" and self.device == "cuda" else {}
            )
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                config.model,
                revision=config.revision,
                local_files_only=local_only,
                dtype=self.dtype,
                **placement,
            )
        except (OSError, ValueError, KeyError, ImportError, AttributeError, RuntimeError) as error:
            where = (
                "the hub is unreachable and it is not in the local cache"
                if local_only and not is_local_folder(config.model)
                else str(error).splitlines()[0][:300]
            )
            raise ModelLoadError(
                f"[caption] model {config.model!r} could not be loaded: {where}. "
                + LOCAL_WEIGHTS_HINT.format(model=config.model)
            ) from error
        if not placement:
            self.model.to(self.device)
        self.model.eval()
        self.device = str(self.model.device)  # where inputs go (the first shard under device_map)
        self.model_type = self.model.config.model_type
        self.decoder_only = not (self.model.config.is_encoder_decoder or self.model_type == "blip")
        if self.decoder_only:
            # generation continues from the right end, so batches pad on the left
            self.processor.tokenizer.padding_side = "left"
        self.prompt_text = self._prompt_text()

    def _prompt_text(self) -> str | None:
        """The full text input for one image, from the checkpoint's chat template when it has one."""
        if self.model_type == "blip":
            return None  # BLIP captions unconditionally; a shopper prompt would be read as the caption's start
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": self.config.prompt}],
            }
        ]
        template = (
            getattr(self.processor, "chat_template", None) or self.processor.tokenizer.chat_template
        )
        if template:
            # Rendered through the tokenizer: some processors' own apply_chat_template reach for the
            # video processor that _without_video_processor left out.
            return self.processor.tokenizer.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=True, tokenize=False
            )
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"USER: {image_token}\n{self.config.prompt} ASSISTANT:"

    def _inputs(self, images: list[Image.Image]) -> Any:
        if self.prompt_text is None:
            return self.processor(images=images, return_tensors="pt")
        batch_images: list = (
            [[image] for image in images] if self.model_type in _NESTED_IMAGE_FAMILIES else images
        )
        return self.processor(
            images=batch_images,
            text=[self.prompt_text] * len(images),
            return_tensors="pt",
            padding=True,
        )

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        inputs = self._inputs(images).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False, num_beams=1
            )
        if self.decoder_only:
            output = output[:, inputs["input_ids"].shape[1] :]  # keep only the new tokens
        return [
            text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)
        ]
