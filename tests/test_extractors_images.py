"""Bad item images become error strings, odd modes become RGB, and the descriptor says it is no MLLM."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from extractors.descriptor import DescriptorCaptioner, describe
from extractors.images import load_image, resolve_image_path

MAX_PIXELS = 40_000_000


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression bomb without the memory)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))


@pytest.fixture()
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (60, 40), (200, 30, 30)).save(root / "red.jpg")
    Image.new("RGBA", (30, 30), (0, 0, 255, 0)).save(root / "transparent.png")
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.new("L", (30, 30), 128).save(root / "grey.jpg")
    Image.new("I;16", (30, 30), 65535).save(root / "sixteen.png")
    full = (root / "red.jpg").read_bytes()
    Image.effect_noise((200, 200), 60).convert("RGB").save(root / "noise.jpg")
    noise = (root / "noise.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(noise[: len(noise) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" + full[-10:])
    _png_claiming_size(root / "bomb.png", 20_000, 20_000)
    (tmp_path / "outside.jpg").write_bytes(full)
    return root


def test_good_and_odd_modes_load_as_rgb(image_root: Path) -> None:
    red = load_image("red.jpg", [image_root], MAX_PIXELS)
    assert red.error is None and red.image.mode == "RGB" and red.image.size == (60, 40)
    transparent = load_image("transparent.png", [image_root], MAX_PIXELS)
    assert transparent.image.getpixel((5, 5)) == (255, 255, 255)  # alpha 0 composited onto white
    cmyk = load_image("cmyk.jpg", [image_root], MAX_PIXELS)
    red_channel, green, blue = cmyk.image.getpixel((5, 5))
    assert cmyk.image.mode == "RGB" and red_channel > 200 and green < 60 and blue < 60
    assert load_image("grey.jpg", [image_root], MAX_PIXELS).image.getpixel((3, 3)) == (
        128,
        128,
        128,
    )
    assert load_image("sixteen.png", [image_root], MAX_PIXELS).image.getpixel((3, 3)) == (
        255,
        255,
        255,
    )


@pytest.mark.parametrize(
    ("image_path", "reason"),
    [
        (None, "missing"),
        ("nope.jpg", "missing"),
        ("truncated.jpg", "corrupt"),
        ("corrupt.jpg", "corrupt"),
        ("bomb.png", "too large"),
        ("../outside.jpg", "rejected"),
    ],
)
def test_bad_images_become_error_strings(
    image_root: Path, image_path: str | None, reason: str
) -> None:
    loaded = load_image(image_path, [image_root], MAX_PIXELS)
    assert loaded.image is None
    assert loaded.error.startswith(reason), loaded.error


def test_absolute_path_outside_every_root_is_rejected(image_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes the image root"):
        resolve_image_path(str(tmp_path / "outside.jpg"), [image_root])
    assert resolve_image_path(
        str(image_root / "red.jpg"), [tmp_path / "other", image_root]
    ).is_file()
    with pytest.raises(ValueError, match="no image root"):
        resolve_image_path("red.jpg", [])


def test_descriptor_describes_colour_and_layout_and_labels_itself() -> None:
    captioner = DescriptorCaptioner()
    assert "not-mllm" in captioner.key and "NOT a multimodal LLM" in captioner.name
    assert captioner.key == DescriptorCaptioner().key  # stable
    red_landscape, blue_portrait = captioner.caption(
        [Image.new("RGB", (300, 100), (200, 30, 30)), Image.new("RGB", (100, 300), (40, 80, 200))]
    )
    assert "landscape" in red_landscape and "red (100%)" in red_landscape
    assert "portrait" in blue_portrait and "blue (100%)" in blue_portrait
    assert "greyscale" in describe(Image.new("RGB", (50, 50), (128, 128, 128)))
