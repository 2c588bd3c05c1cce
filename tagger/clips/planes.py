"""YUV 4:2:0 planes in place of RGB frames, for a model on a GPU: the decode side.

Where a GPU runs the model, the CPU decode that feeds it is the bound, and about half of it is
the conversion to RGB. Here swscale only resizes, to 4:2:0 planes (half the bytes of RGB), and
the model's device turns them into RGB (``tagger.transforms.planes_to_rgb``).

The device applies the colour matrix swscale itself applies for the stream's tags, measured
on swscale once per decode process for each kind of stream (``colour_matrix``): its
limited-range conversion is one to two grey levels darker than the BT.601 and BT.709
formulas, so the formulas alone would give other pixels than the RGB path.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from tagger.clips.crops import offsets
from tagger.records import Planes

#: The frame the matrix is measured on has up to this many flat patches down and across, each
#: at least 16 pixels, and 8 once resized, so that their centres stay flat.
_PATCHES = 16
#: Fewer patches than this (a frame under about 64 pixels a side): too small to measure, RGB.
_PATCHES_MIN = 16


def describe(
    frame: Any, width: int, height: int, rotation: int, crop: tuple[int, int] | None
) -> Planes | None:
    """How ``frame``, resized to ``width`` x ``height``, ships as planes; None: as RGB.

    Planes carry a centre crop of a 4:2:0 frame that is not turned, resized down. RGB, grey,
    palette, 4:2:2 and 4:4:4 sources (whose colour detail 4:2:0 would halve), rotated videos,
    and frames smaller than the model's size go as RGB, as before: swscale's RGB path takes
    chroma from elsewhere when it enlarges (up to half a pixel off), and small frames are
    cheap to convert anyway.
    """
    fmt = frame.format
    if crop is None or rotation or fmt.is_rgb or fmt.has_palette or fmt.is_bayer or len(fmt.components) < 3:
        return None
    if fmt.chroma_width(frame.width) >= frame.width or fmt.chroma_height(frame.height) >= frame.height:
        return None
    ch, cw = crop
    if height < ch or width < cw or width > frame.width or height > frame.height:
        return None
    source = (frame.width, frame.height)
    matrix = colour_matrix(fmt.name, int(frame.colorspace), int(frame.color_range), source, (width, height))
    if matrix is None:
        return None
    top, left = offsets(height, ch)[1], offsets(width, cw)[1]
    # Where the crop's first pixel takes its chroma from: 4:2:0 chroma sits level with even
    # columns (MPEG-2, H.264) and between two rows. The window starts a sample before.
    first_row, first_col = (top - 0.5) / 2, left / 2
    start = (math.floor(first_row) - 1, math.floor(first_col) - 1)
    origin = (first_row - start[0], first_col - start[1])
    return Planes(height=ch, width=cw, start=start, origin=origin, matrix=matrix)


def cut(frame: Any, planes: Planes, width: int, height: int, reformatter: Any) -> np.ndarray:
    """``frame`` resized to ``width`` x ``height`` 4:2:0, cropped as ``planes`` says: one row."""
    small = reformatter.reformat(
        frame, format="yuv420p", width=width, height=height, interpolation="BILINEAR"
    )
    luma, u, v = (_plane(p) for p in small.planes)
    ch, cw = planes.height, planes.width
    top, left = offsets(height, ch)[1], offsets(width, cw)[1]
    nh, nw = planes.chroma_shape
    # The chroma window; past the frame's edges the edge samples repeat.
    rows = np.clip(np.arange(planes.start[0], planes.start[0] + nh), 0, u.shape[0] - 1)
    cols = np.clip(np.arange(planes.start[1], planes.start[1] + nw), 0, u.shape[1] - 1)
    row = np.empty(planes.row_size, dtype=np.uint8)
    row[: ch * cw] = luma[top : top + ch, left : left + cw].ravel()
    row[ch * cw : ch * cw + nh * nw] = u[np.ix_(rows, cols)].ravel()
    row[ch * cw + nh * nw :] = v[np.ix_(rows, cols)].ravel()
    return row


def _plane(plane: Any) -> np.ndarray:
    return np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


@functools.cache
def colour_matrix(
    pix_fmt: str, colorspace: int, color_range: int, source: tuple[int, int], size: tuple[int, int]
) -> tuple[float, ...] | None:
    """RGB = M @ (Y, U, V, 1), row-major 3x4: how swscale's RGB path converts frames of this
    pixel format and these tags resized from ``source`` to ``size`` (width, height), against
    the 4:2:0 planes ``cut`` ships. swscale takes other paths, with other rounding, at other
    ratios. None when the frame is too small to measure on.

    Fitted on a frame of flat patches of many colours: a patch centre is untouched by
    resampling, so the colour conversion alone is left.
    """
    (width, height), (out_w, out_h) = source, size
    down = min(_PATCHES, height // 16, out_h // 8)
    across = min(_PATCHES, width // 16, out_w // 8)
    if down * across < _PATCHES_MIN:
        return None
    # Patch colours inside the RGB cube, in (roughly) BT.601 YUV: patches that clip in some
    # channel would say nothing about the matrix.
    rgb = np.random.default_rng(0).uniform(24, 232, (down * across, 3))
    to_yuv = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
    values = (rgb @ to_yuv.T + (16, 128, 128)).round().clip(0, 255).astype(np.uint8)
    # Patch edges on even pixels, so that 4:2:0 chroma has them too.
    rows = np.arange(down + 1) * height // down // 2 * 2
    cols = np.arange(across + 1) * width // across // 2 * 2
    flat = np.repeat(np.repeat(values.T.reshape(3, down, across), np.diff(rows), 1), np.diff(cols), 2)
    flat = np.pad(flat, ((0, 0), (0, height - rows[-1]), (0, width - cols[-1])), mode="edge")
    out, (luma, u, v) = _convert(flat, pix_fmt, colorspace, color_range, size)
    cy = ((rows[:-1] + rows[1:]) / 2 * out_h / height).astype(int)
    cx = ((cols[:-1] + cols[1:]) / 2 * out_w / width).astype(int)
    # Each patch's 4x4 centre pixels (2x2 chroma samples), averaged: what swscale dithers,
    # going from more than 8 bits to 8, averages out.
    got = _centres(out, cy, cx, 2).reshape(-1, 3)
    shipped = np.stack(
        [
            _centres(luma, cy, cx, 2).ravel(),
            _centres(u, cy // 2, cx // 2, 1).ravel(),
            _centres(v, cy // 2, cx // 2, 1).ravel(),
            np.ones(len(got)),
        ],
        axis=1,
    )
    inside = ((got > 1) & (got < 254)).all(axis=1)
    solution = np.linalg.lstsq(shipped[inside], got[inside], rcond=None)[0]
    return tuple(float(x) for x in solution.T.ravel())


def _convert(
    flat: np.ndarray, pix_fmt: str, colorspace: int, color_range: int, size: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``flat`` (3, H, W) YUV 4:4:4 as a ``pix_fmt`` frame with these tags, resized to ``size``
    both ways: swscale's RGB, and the 4:2:0 planes ``cut`` would ship."""
    frame = VideoFrame.from_ndarray(np.ascontiguousarray(flat), format="yuv444p")
    frame.colorspace, frame.color_range = colorspace, color_range
    if pix_fmt != "yuv444p":
        frame = VideoReformatter().reformat(frame, format=pix_fmt)
        frame.colorspace, frame.color_range = colorspace, color_range
    width, height = size
    rgb = VideoReformatter().reformat(
        frame, format="rgb24", width=width, height=height, interpolation="BILINEAR"
    )
    small = VideoReformatter().reformat(
        frame, format="yuv420p", width=width, height=height, interpolation="BILINEAR"
    )
    return rgb.to_ndarray().astype(np.float64), [_plane(p).astype(np.float64) for p in small.planes]


def _centres(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, half: int) -> np.ndarray:
    """The mean of the ``2 * half`` square around each (row, col) of ``image``."""
    out = np.zeros((len(rows), len(cols), *image.shape[2:]))
    for dy in range(-half, half):
        for dx in range(-half, half):
            out += image[np.ix_(rows + dy, cols + dx)]
    return out / (2 * half) ** 2
