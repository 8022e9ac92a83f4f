"""Safe loading of item images: path confinement, size limits, and conversion of any mode to RGB."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class LoadedImage:
    """An RGB image ready for a captioner, or the reason there is none (`error`)."""

    image: Image.Image | None
    error: str | None


def resolve_image_path(image_path: str, image_roots: Sequence[Path]) -> Path:
    """`image_path` resolved (relative paths against the first root); ValueError when it leaves every root."""
    roots = [root.expanduser().resolve() for root in image_roots]
    if not roots:
        raise ValueError("no image root is configured, so no image path can be trusted")
    candidate = (roots[0] / Path(image_path).expanduser()).resolve()
    if not any(candidate.is_relative_to(root) for root in roots):
        raise ValueError(
            f"image path {image_path!r} escapes the image root(s) {', '.join(map(str, roots))}"
        )
    return candidate


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of any Pillow mode; transparency is composited onto white (product photos' usual ground)."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


def load_image(image_path: str | None, image_roots: Sequence[Path], max_pixels: int) -> LoadedImage:
    """Open, check and decode one image; every failure becomes an error string, never an exception."""
    if not image_path:
        return LoadedImage(None, "missing: the catalog has no image_path for this item")
    try:
        path = resolve_image_path(image_path, image_roots)
    except ValueError as error:
        return LoadedImage(None, f"rejected: {error}")
    if not path.is_file():
        return LoadedImage(None, f"missing: no file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    return LoadedImage(
                        None,
                        f"too large: {width} x {height} pixels exceeds max_image_pixels "
                        f"= {max_pixels} ({path})",
                    )
                opened.load()
                return LoadedImage(to_rgb(opened), None)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return LoadedImage(None, f"too large: {error} ({path})")
    except UnidentifiedImageError:
        return LoadedImage(None, f"corrupt: not a readable image ({path})")
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports truncated and damaged files as OSError (and a few decoders as SyntaxError/ValueError)
        return LoadedImage(None, f"corrupt: {error} ({path})")
