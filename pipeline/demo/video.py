"""Short clips of a real handwritten digit moving over a real photo, for video captioning.

Why this shape: the tiny CPU model learns from a few video positions only when the content is what
it already learns on stills (a large handwritten digit on a contrast-cut photo, see
`pipeline.demo.images`) and the motion is large and uniform: one digit crosses at least
`MIN_TRAVEL` of the 64 px canvas at constant speed in one of four directions, over a static
background. The caption names the digit and the direction ("a seven moves to the left"), so a model
must read both the glyph and the order of the frames (a still frame tells the digit, not where it
goes).

Sources and held-out digits are those of `pipeline.demo.images` (its helpers are reused, not
copied): scikit-learn's `load_digits` partitioned into train/valid/test pools, and the PNG photos
bundled with scikit-image.

Containers: encoded by PyAV (FFmpeg), mostly mp4 (MPEG-4 part 2, FFmpeg's own encoder), some webm
(VP8, libvpx) and GIF (a per-clip median-cut palette from PIL, no dithering), at 10, 20 or 25 fps.
Determinism: every container is written with FFmpeg's `bitexact` flag (webm's muxer would otherwise
draw random segment and track ids) and encoders run on one thread, so the same clip gives the same
bytes. Damaged rows (see `DAMAGE`): an mp4 cut in the middle (its index, written last, is gone) or
a fragmented mp4 that holds a video track but no frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.demo import images

CANVAS = images.CANVAS
FRAMES = (8, 12)
"""Inclusive range of frames per clip."""
RATES = (10, 20, 25)
"""Frame rates (whole centiseconds per frame, as GIF stores delays)."""
DIGIT_SIZES = (24, 28)
"""Inclusive range of the side of the square a digit glyph is upscaled to: the large digits the tiny
model learns on stills (`images.DIGIT_SIZES` is 24-32), capped at 28 so a digit has room to travel."""
MIN_TRAVEL = 24
"""Least distance, in pixels, the digit's ink box moves from the first to the last frame."""
DIRECTIONS = ("left", "right", "up", "down")
PHRASES = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
CONTAINERS = (("webm", 0.15), ("gif", 0.15))
"""(container, probability) of clips not stored as `CONTAINER`."""
CONTAINER = "mp4"
BIT_RATE = 400_000
"""mp4 and webm bit rate: ample for 64x64 frames, so compression does not blur the digit away."""
DAMAGE = ("truncated", "no_frames")
"""Kinds of damaged rows: an mp4 cut in half, a fragmented mp4 with an empty video track."""
_CODECS = {"mp4": ("mpeg4", "yuv420p"), "webm": ("libvpx", "yuv420p"), "gif": ("gif", "pal8")}
_BITEXACT = {"fflags": "+bitexact"}


@dataclass(frozen=True)
class Clip:
    """One rendered clip and what is needed to check it."""

    frames: tuple[np.ndarray, ...]  # each CANVAS x CANVAS x 3 uint8
    background: np.ndarray  # CANVAS x CANVAS x 3 uint8, the same under every frame
    label: int
    index: int  # the `load_digits` index
    direction: str
    boxes: tuple[tuple[int, int, int, int], ...]  # per frame, the tight ink box (x0, y0, x1, y1)
    rate: int
    container: str

    @property
    def caption(self) -> str:
        word = images.WORDS[self.label]
        article = "an" if word == "eight" else "a"
        return f"{article} {word} moves {PHRASES[self.direction]}"


def _steps(start: int, travel: int, frames: int, backwards: bool) -> list[int]:
    """Positions at constant speed from `start` over `travel` px in `frames` frames (rounded exactly)."""
    out = [start + (2 * t * travel + frames - 1) // (2 * (frames - 1)) for t in range(frames)]
    return out[::-1] if backwards else out


def render(rng: np.random.Generator, split: str) -> Clip:
    """A clip of one digit from `split`'s pool crossing a photo background."""
    bg = images.background(rng)
    label, index = images._pick(rng, split, set())
    ink = images._ink(index, int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1)))
    h, w = ink.shape
    frames = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
    direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    horizontal = direction in ("left", "right")
    room = CANVAS - (w if horizontal else h)
    travel = int(rng.integers(MIN_TRAVEL, room + 1))
    start = int(rng.integers(room - travel + 1))
    along = _steps(start, travel, frames, backwards=direction in ("left", "up"))
    across = int(rng.integers(CANVAS - (h if horizontal else w) + 1))
    corners = [(across, a) if horizontal else (a, across) for a in along]  # (y, x)
    # Black or white ink, whichever stands out more from the background along the whole path
    # (decided on integers, as `images.render` does, so no float summation order can flip it).
    ys0, xs0 = min(y for y, _ in corners), min(x for _, x in corners)
    ys1, xs1 = max(y for y, _ in corners) + h, max(x for _, x in corners) + w
    region = images._to_uint8(bg[ys0:ys1, xs0:xs1]).astype(np.int64)
    color = 0.0 if int(region.sum()) >= 128 * region.size else 255.0
    out, boxes = [], []
    for y, x in corners:
        alpha = np.zeros((CANVAS, CANVAS))
        alpha[y : y + h, x : x + w] = ink
        out.append(images._to_uint8(bg * (1 - alpha[:, :, None]) + color * alpha[:, :, None]))
        boxes.append((x, y, x + w, y + h))
    rate = RATES[int(rng.integers(len(RATES)))]
    u, container = float(rng.random()), CONTAINER
    for name, p in CONTAINERS:
        if u < p:
            container = name
            break
        u -= p
    return Clip(tuple(out), images._to_uint8(bg), label, index, direction, tuple(boxes), rate, container)


def _gif_frames(frames: tuple[np.ndarray, ...]):
    """pal8 frames sharing one median-cut palette of the whole clip (PIL, no dithering)."""
    import av
    from PIL import Image

    n, h, w, _ = np.shape(frames)
    mosaic = Image.fromarray(np.concatenate(frames, axis=0))
    quantised = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.asarray(quantised.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), np.uint8)  # PyAV's pal8 palette is ARGB
    palette[: len(rgb), 0] = 255
    palette[: len(rgb), 1:] = rgb
    indices = np.asarray(quantised, np.uint8).reshape(n, h, w)
    return [av.VideoFrame.from_ndarray((indices[i], palette), format="pal8") for i in range(n)]


def encode(frames: tuple[np.ndarray, ...], container: str, rate: int, options: dict[str, str] | None = None) -> bytes:
    """The clip as `container` bytes ("mp4" | "webm" | "gif"); the same frames give the same bytes."""
    import av

    codec, pix_fmt = _CODECS[container]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container, options={**_BITEXACT, **(options or {})}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1
        if container != "gif":
            stream.bit_rate = BIT_RATE
        todo = _gif_frames(frames) if container == "gif" else [av.VideoFrame.from_ndarray(f, format="rgb24")
                                                               for f in frames]
        out.start_encoding()
        for frame in todo:
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def damaged(clip: Clip, kind: str) -> bytes:
    """A damaged file of `clip`: "truncated" (an mp4 cut in half: no index, FFmpeg can't open it) or
    "no_frames" (a fragmented mp4 whose video track has no frame)."""
    if kind == "truncated":
        data = encode(clip.frames, "mp4", clip.rate)
        return data[: len(data) // 2]
    if kind == "no_frames":
        return empty_mp4(clip.rate)
    raise ValueError(f"unknown damage {kind!r}; known: {', '.join(DAMAGE)}")


def empty_mp4(rate: int) -> bytes:
    """A fragmented mp4 (its track header first, samples in later fragments) with no fragment."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={**_BITEXACT, "movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = CANVAS, CANVAS
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
    return buf.getvalue()


def caption(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`clip` (mp4/webm/gif bytes), `cap`: "a seven moves to the left" (digit word and direction)."""
    # tasks imports this module for its registry, so its helpers are imported here, not above
    from pipeline.demo.tasks import _check, _corrupt_rows, _rng, _table

    _check(split, size, corrupt)
    rng = _rng(seed, "video_caption", split)
    bad = _corrupt_rows(seed, "video_caption", split, size, corrupt)
    by_kind = {kind: bad[i :: len(DAMAGE)] for i, kind in enumerate(DAMAGE)}
    damage = {row: kind for kind, rows in by_kind.items() for row in rows}
    clips, caps = [], []
    for row in range(size):
        clip = render(rng, split)
        clips.append(damaged(clip, damage[row]) if row in damage else encode(clip.frames, clip.container, clip.rate))
        caps.append(clip.caption)
    return _table({"clip": pa.array(clips, pa.binary()), "cap": pa.array(caps, pa.string())},
                  "video_caption", split, size, seed, bad,
                  **{f"corrupt_{kind}_rows": rows for kind, rows in by_kind.items()})
