"""A no-weights captioner that states what classical image analysis measures; it is NOT a multimodal LLM."""

from __future__ import annotations

import numpy as np
from PIL import Image

from extractors.base import BatchCaptioner, stable_key

DESCRIPTOR_VERSION = 1
ANALYSIS_SIDE = (
    128  # images are measured on a thumbnail this size: enough for colour and layout statistics
)

# Named reference colours (sRGB); each pixel cluster takes the nearest name.
_COLOUR_NAMES = {
    "black": (20, 20, 20),
    "dark grey": (80, 80, 80),
    "grey": (140, 140, 140),
    "light grey": (200, 200, 200),
    "white": (245, 245, 245),
    "red": (200, 30, 30),
    "dark red": (110, 15, 20),
    "pink": (240, 150, 180),
    "orange": (240, 130, 30),
    "brown": (120, 75, 35),
    "beige": (220, 200, 160),
    "yellow": (235, 215, 40),
    "olive": (120, 120, 40),
    "green": (40, 150, 50),
    "dark green": (20, 70, 30),
    "teal": (30, 130, 130),
    "light blue": (130, 180, 230),
    "blue": (40, 80, 200),
    "navy": (20, 30, 80),
    "purple": (110, 50, 150),
}
_NAMES = list(_COLOUR_NAMES)
_REFERENCE = np.array(list(_COLOUR_NAMES.values()), dtype=np.float32)  # (C, 3)


def _dominant_colours(pixels: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
    """Share of pixels nearest each named colour, largest first. pixels: (N, 3) float32."""
    distances = ((pixels[:, None, :] - _REFERENCE[None, :, :]) ** 2).sum(-1)  # (N, C)
    counts = np.bincount(distances.argmin(1), minlength=len(_NAMES)) / len(pixels)
    order = np.argsort(-counts)[:top]
    return [(_NAMES[index], float(counts[index])) for index in order if counts[index] >= 0.05]


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness; about 0 for greyscale, > 40 for vivid images."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _skin_share(rgb: np.ndarray) -> float:
    """Share of pixels in a common YCbCr skin-tone box: a crude hint of people, not face detection."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    cr = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    return float(((cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)).mean())


def _text_like_bands(luma: np.ndarray) -> list[str]:
    """Horizontal thirds dense in sharp light/dark alternations along rows, as lettering produces."""
    jumps = np.abs(np.diff(luma, axis=1)) > 60  # (H, W-1)
    bands = np.array_split(jumps.mean(1), 3)
    return [
        name
        for name, band in zip(("top", "middle", "bottom"), bands, strict=True)
        if band.mean() > 0.08
    ]


def describe(image: Image.Image) -> str:
    """One descriptive sentence group about an RGB image's layout, light, colours and detail."""
    width, height = image.size
    ratio = width / height
    orientation = "portrait" if ratio < 0.9 else "landscape" if ratio > 1.1 else "square"
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE))
    rgb = np.asarray(thumbnail, dtype=np.float32)  # (h, w, 3)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (h, w)
    brightness = "dark" if luma.mean() < 85 else "bright" if luma.mean() > 170 else "mid-toned"
    contrast = (
        "high-contrast"
        if luma.std() > 60
        else "low-contrast"
        if luma.std() < 25
        else "moderate-contrast"
    )
    colourfulness = _colourfulness(rgb)
    palette = "greyscale" if colourfulness < 8 else "muted" if colourfulness < 35 else "colourful"
    colours = ", ".join(
        f"{name} ({share:.0%})" for name, share in _dominant_colours(rgb.reshape(-1, 3))
    )
    parts = [
        f"A {orientation} image ({width} x {height}), {brightness}, {contrast} and {palette}.",
        f"Dominant colours: {colours}.",
    ]
    skin = _skin_share(rgb)
    if skin > 0.05:
        parts.append(f"Skin-tone areas cover {skin:.0%} of it (possibly people).")
    bands = _text_like_bands(luma)
    if bands:
        parts.append(f"Dense fine detail in the {' and '.join(bands)} (possibly text).")
    return " ".join(parts)


class DescriptorCaptioner(BatchCaptioner):
    """Captions from colour, light and layout statistics; needs no weights; its key says it is no MLLM."""

    name = "descriptor (classical image analysis; NOT a multimodal LLM)"

    def __init__(self, batch_size: int = 8) -> None:
        self.key = stable_key(
            "descriptor-not-mllm", "image-statistics", {"version": DESCRIPTOR_VERSION}
        )
        self.preferred_batch = batch_size
        self.provenance = {
            "backend": "descriptor",
            "note": "classical image statistics; not a multimodal LLM",
            "version": DESCRIPTOR_VERSION,
        }

    def caption(self, images: list[Image.Image]) -> list[str]:
        return [describe(image) for image in images]
