"""How an image of any size becomes the network's square input, and how a square map goes back to the image.

Two geometries (``DataConfig.geometry``, docs/PROTOCOL.md "Image geometry"):

* ``squash`` (default, the study's numbers): resize to ``side x side``; a 500 x 1250 strip is stretched 2.5x along
  its short axis. Every pixel of the square is image content.
* ``letterbox``: resize so that the longer side is ``side`` (aspect kept; the shorter side is
  ``round(side * short / long)``, at least 1), centred on a ``side x side`` canvas of :data:`PAD_VALUE` (black).
  Masks are padded alike (0 = normal). The padded pixels are no image content: :func:`valid_mask` marks the
  content, and every pixel metric ignores the rest. A square image gives exactly the squash result.

:func:`to_image_size` is the way back (``make predict``): crop the content box, resize to the original size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from avaga_lib.config import GEOMETRIES

PAD_VALUE = 0  # letterbox padding of images (black) and masks (normal)


def content_box(size: tuple[int, int], side: int, geometry: str) -> tuple[int, int, int, int]:
    """Where the image lands in the ``side x side`` square.

    Args:
        size: the image's (width, height), as PIL's ``Image.size``.
        side: the square's side.
        geometry: ``squash`` or ``letterbox``.

    Returns:
        (left, top, width, height) of the content inside the square.

    Raises:
        ValueError: an unknown geometry (the allowed ones named).
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry '{geometry}' unknown; choose one of {GEOMETRIES}")
    w, h = size
    if geometry == "squash" or w == h:
        return 0, 0, side, side
    cw = side if w >= h else max(1, round(side * w / h))
    ch = side if h >= w else max(1, round(side * h / w))
    return (side - cw) // 2, (side - ch) // 2, cw, ch


def to_square(im: Image.Image, side: int, geometry: str, resample: int) -> np.ndarray:
    """``im`` resized (and, for letterbox, padded with :data:`PAD_VALUE`) to ``side x side``, as a numpy array."""
    left, top, cw, ch = content_box(im.size, side, geometry)
    resized = im.resize((cw, ch), resample)
    if (cw, ch) == (side, side):
        return np.array(resized)  # a writable copy (torch.from_numpy warns on read-only arrays)
    canvas = Image.new(im.mode, (side, side), PAD_VALUE)
    canvas.paste(resized, (left, top))
    return np.array(canvas)


def valid_mask(size: tuple[int, int], side: int, geometry: str) -> np.ndarray:
    """Bool ``(side, side)``: True on image content, False on letterbox padding (all True for squash)."""
    left, top, cw, ch = content_box(size, side, geometry)
    valid = np.zeros((side, side), dtype=bool)
    valid[top : top + ch, left : left + cw] = True
    return valid


def to_image_size(square: np.ndarray, size: tuple[int, int], geometry: str) -> np.ndarray:
    """A square float map back at the image's own size: crop the content box (letterbox), resize bilinearly.

    Args:
        square: (S, S) map of the network's input geometry.
        size: the original image's (width, height).
        geometry: the geometry the square was made with.

    Returns:
        float32 (height, width) map.
    """
    side = square.shape[-1]
    if square.shape != (side, side):
        raise ValueError(f"to_image_size: expected a square (S, S) map, got {square.shape}")
    left, top, cw, ch = content_box(size, side, geometry)
    crop = np.ascontiguousarray(square[top : top + ch, left : left + cw], dtype=np.float32)
    return np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR), dtype=np.float32)


__all__ = ["PAD_VALUE", "content_box", "to_image_size", "to_square", "valid_mask"]
