"""Safe loading of item images: path confinement, size limits, and conversion of any mode to RGB."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class LoadedImage:
    """An RGB image ready for a captioner, or the reason there is none (`error`)."""

    image: Image.Image | None
    error: str | None


MAX_IMAGE_BYTES = 256 * 2**20  # no item image is larger; a bigger file is refused unread


class ImageFileError(OSError):
    """A path where an image should be is not a regular file, or is larger than the limit."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # "rejected" or "too large": the start of the item's error row


def open_image_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> BinaryIO:
    """`path` opened for reading when it is a regular file of at most `max_bytes` (ImageFileError if not).

    Opened with O_NONBLOCK, so a FIFO or device returns at once instead of blocking, and with
    O_NOFOLLOW, so a symlink swapped in after the path was resolved is not followed; then
    checked with fstat on the open descriptor, so what is checked is what is read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == getattr(os, "ELOOP", None) or Path(path).is_symlink():
            raise ImageFileError("rejected", f"a symbolic link, not an image file: {path}") from error
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ImageFileError(
                "rejected", f"not a regular file (a FIFO, device or folder): {path}"
            )
        if info.st_size > max_bytes:
            raise ImageFileError(
                "too large", f"{info.st_size} bytes exceeds the image file limit {max_bytes}: {path}"
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


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


def load_image(
    image_path: str | None,
    image_roots: Sequence[Path],
    max_pixels: int,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> LoadedImage:
    """Open, check and decode one image; every failure becomes an error string, never an exception."""
    if not image_path:
        return LoadedImage(None, "missing: the catalog has no image_path for this item")
    try:
        path = resolve_image_path(image_path, image_roots)
    except ValueError as error:
        return LoadedImage(None, f"rejected: {error}")
    try:
        handle = open_image_file(path, max_bytes)
    except ImageFileError as error:
        return LoadedImage(None, f"{error.reason}: {error}")
    except FileNotFoundError:
        return LoadedImage(None, f"missing: no file at {path}")
    except OSError as error:
        return LoadedImage(None, f"unreadable: {error.strerror or error} ({path})")
    try:
        with handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as opened:
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
