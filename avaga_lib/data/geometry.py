"""How an image of any size becomes the network's square input, and how a square map goes back to the image.

Three geometries (``DataConfig.geometry``, docs/PROTOCOL.md "Image geometry"):

* ``squash`` (default, the study's numbers): resize to ``side x side``; a 500 x 1250 strip is stretched 2.5x along
  its short axis. Every pixel of the square is image content.
* ``letterbox``: resize so that the longer side is ``side`` (aspect kept; the shorter side is
  ``round(side * short / long)``, at least 1), centred on a ``side x side`` canvas of :data:`PAD_VALUE` (black).
  Masks are padded alike (0 = normal). The padded pixels are no image content: :func:`valid_mask` marks the
  content, and every pixel metric ignores the rest. A square image gives exactly the squash result.
* ``reflect``: the letterbox's content box, but the padding is the content mirrored at its border (numpy's
  ``symmetric`` mode, repeated while the padding is wider than the content); masks are padded with 0 (normal). A
  black pad puts a hard edge beside the content that a convolutional network maps as anomalous (issue 23: AE-SSIM's
  two outermost content columns averaged 0.98 against 0.66 inside); a mirror continues the texture. The padding is
  still no content: :func:`valid_mask` marks it and no pixel metric counts it.

:func:`to_image_size` is the way back (``make predict``): crop the content box, resize to the original size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from avaga_lib.config import GEOMETRIES

PAD_VALUE = 0  # letterbox padding of images (black) and masks (normal)
PADDED: tuple[str, ...] = ("letterbox", "reflect")  # the geometries that keep the aspect and pad the short side


def content_box(size: tuple[int, int], side: int, geometry: str) -> tuple[int, int, int, int]:
    """Where the image lands in the ``side x side`` square.

    Args:
        size: the image's (width, height), as PIL's ``Image.size``.
        side: the square's side.
        geometry: one of :data:`~avaga_lib.config.GEOMETRIES`.

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


def to_square(im: Image.Image, side: int, geometry: str, resample: int, is_mask: bool = False) -> np.ndarray:
    """``im`` resized to ``side x side`` as a numpy array: squashed, or its content box padded with
    :data:`PAD_VALUE` (letterbox) or with its own mirror image (reflect).

    A mask (``is_mask``) is always padded with :data:`PAD_VALUE` (normal): the mirrored copy of a defect in a
    reflect square is no defect of the image, and no pixel metric counts the padding anyway."""
    left, top, cw, ch = content_box(im.size, side, geometry)
    resized = im.resize((cw, ch), resample)
    if (cw, ch) == (side, side):
        return np.array(resized)  # a writable copy (torch.from_numpy warns on read-only arrays)
    if geometry == "reflect" and not is_mask:
        arr = np.asarray(resized)
        pad = [(top, side - top - ch), (left, side - left - cw)] + [(0, 0)] * (arr.ndim - 2)
        return np.pad(arr, pad, mode="symmetric")  # the edge pixel repeated once, then the mirror: no seam
    canvas = Image.new(im.mode, (side, side), PAD_VALUE)
    canvas.paste(resized, (left, top))
    return np.array(canvas)


def valid_mask(size: tuple[int, int], side: int, geometry: str) -> np.ndarray:
    """Bool ``(side, side)``: True on image content, False on padding (letterbox, reflect; all True for squash)."""
    left, top, cw, ch = content_box(size, side, geometry)
    valid = np.zeros((side, side), dtype=bool)
    valid[top : top + ch, left : left + cw] = True
    return valid


def to_image_size(square: np.ndarray, size: tuple[int, int], geometry: str) -> np.ndarray:
    """A square float map back at the image's own size: crop the content box (letterbox, reflect), resize bilinearly.

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


__all__ = ["PADDED", "PAD_VALUE", "content_box", "to_image_size", "to_square", "valid_mask"]
