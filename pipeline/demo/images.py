"""Scenes of real handwritten digits pasted on real photos, with exact boxes.

Why this shape (see SETUP.md "Calibration"): a ~1M-parameter model learns captioning, grounding and
counting on CPU in minutes only when the digits are large (24-32 px on a 64 px canvas), few (1-2,
up to 3 for counting), never overlap, and stand out from a background whose contrast is cut to 0.4.

Sources are packaged real data only: scikit-learn's `load_digits` (1,797 handwritten 8x8 digits) and
the PNG photos bundled in scikit-image (loaded offline; the JPEG ones are left out so decoding cannot
vary with the JPEG library). Digit *instances* are partitioned once, by a fixed permutation stratified
by class, into train/valid/test pools, so the test split shows the model digits it never saw.

`named_scene` is the other kind of scene, for generating images: one large digit centred on a fixed
crop of a named photo, so a caption naming the digit and the photo nearly determines the image.

A box is the tight box of the pasted ink in pixel edges: `(x0, y0, x1, y1)` covers the pixels
`x0 <= x < x1`, `y0 <= y < y1`; every pixel the paste changed lies inside it.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

CANVAS = 64
"""Side of the square RGB canvas, in pixels."""
DIGIT_SIZES = (24, 32)
"""Inclusive range of the side of the square a digit glyph is upscaled to."""
CONTRAST = 0.4
"""Background photo contrast: pixel = 128 + CONTRAST * (photo - 128)."""
INK_THRESHOLD = 0.2
"""Glyph alpha below this is dropped, so the ink box is exact (no faint halo outside it)."""
GAP = 2
"""Minimum free pixels between two digits' ink boxes."""
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Digit class -> word (captions and grounding queries use words, not digits)."""
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
"""Share of each class's digit instances held out for each split."""
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "immunohistochemistry", "moon", "page", "stereo_motorcycle", "text",
)
"""Bundled scikit-image photos (PNG files in the wheel) used as backgrounds."""
_PARTITION_SEED = 20261122
"""Fixed: the digit pools must not depend on the run's seed, or 'held out' would mean nothing."""


@dataclass(frozen=True)
class Digit:
    """One pasted digit: its class, `load_digits` index and tight ink box (pixel edges)."""

    label: int
    index: int
    box: tuple[int, int, int, int]

    @property
    def word(self) -> str:
        return WORDS[self.label]


@dataclass(frozen=True)
class Scene:
    """A rendered canvas plus what is needed to check it: the background and per-digit alpha."""

    image: np.ndarray  # CANVAS x CANVAS x 3 uint8
    background: np.ndarray  # same, before pasting
    digits: tuple[Digit, ...]  # left to right by ink box x0
    alphas: tuple[np.ndarray, ...]  # per digit, CANVAS x CANVAS float alpha (0 outside the ink)


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.ascontiguousarray(data.images, dtype=np.float64) / 16.0
    labels = np.asarray(data.target, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@functools.cache
def digit_pools() -> dict[str, tuple[np.ndarray, ...]]:
    """split -> per class, the sorted `load_digits` indices this split may use (disjoint splits)."""
    _, labels = _digits()
    rng = np.random.default_rng(_PARTITION_SEED)
    pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(len(idx) * SPLIT_FRACTIONS[0]))
        n_valid = int(round(len(idx) * SPLIT_FRACTIONS[1]))
        parts = (idx[:n_train], idx[n_train : n_train + n_valid], idx[n_train + n_valid :])
        for split, part in zip(SPLITS, parts):
            pools[split].append(np.sort(part))
    return {s: tuple(p) for s, p in pools.items()}


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    import skimage.data

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.asarray(img[:, :, :3], dtype=np.int64)
        # Integral image (exact in int64): any k x k block sum is 4 look-ups, so area-downscaling a
        # random crop costs the same for every scale.
        integral = np.zeros((img.shape[0] + 1, img.shape[1] + 1, 3), dtype=np.int64)
        integral[1:, 1:] = img.cumsum(axis=0).cumsum(axis=1)
        integral.flags.writeable = False
        out.append(integral)
    return tuple(out)


def background(rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random photo, area-downscaled by 1-4x to the canvas, contrast cut."""
    photos = _photos()
    integral = photos[int(rng.integers(len(photos)))]
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    max_scale = min(4, h // CANVAS, w // CANVAS)
    k = int(rng.integers(1, max_scale + 1))
    side = CANVAS * k
    y = int(rng.integers(h - side + 1))
    x = int(rng.integers(w - side + 1))
    return _crop(integral, k, y, x)


def _crop(integral: np.ndarray, k: int, y: int, x: int) -> np.ndarray:
    """The CANVAS x CANVAS float crop whose top-left is `(y, x)`, area-downscaled by `k`, contrast cut.

    Shared by the random and the named backgrounds, so both have the same look (and the same cut).
    """
    ys = y + k * np.arange(CANVAS + 1)
    xs = x + k * np.arange(CANVAS + 1)
    block = integral[ys[:, None], xs[None, :]]  # (CANVAS+1) x (CANVAS+1) x 3 corner sums
    sums = block[1:, 1:] - block[:-1, 1:] - block[1:, :-1] + block[:-1, :-1]
    small = sums / float(k * k)
    return 128.0 + CONTRAST * (small - 128.0)


@functools.cache
def _padded_digits() -> np.ndarray:
    padded = np.pad(_digits()[0], ((0, 0), (1, 1), (1, 1)))
    padded.flags.writeable = False
    return padded


@functools.cache
def _interpolation(size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bilinear sample positions (lower index, fraction) for upscaling a padded 10x10 digit."""
    n = _padded_digits().shape[1]
    out_size = int(round(size * n / 8))
    coords = (np.arange(out_size) + 0.5) * (n / out_size) - 0.5
    coords = np.clip(coords, 0.0, n - 1.0)
    lo = np.minimum(np.floor(coords).astype(np.int64), n - 2)
    return lo, coords - lo, out_size


def glyph(index: int, size: int) -> np.ndarray:
    """Digit `index` as an alpha map in [0, 1] whose 8x8 cell spans `size` pixels, faint ink dropped.

    The 8x8 digit is padded with a blank border before bilinear upscaling, so ink that touches the
    cell's edge fades out instead of ending in a hard straight cut. Only elementwise float ops (no
    BLAS, no reductions), so the result is bit-identical on every CPU.
    """
    src = _padded_digits()[index]
    lo, frac, _ = _interpolation(size)
    rows = src[lo] * (1 - frac)[:, None] + src[lo + 1] * frac[:, None]
    out = rows[:, lo] * (1 - frac)[None, :] + rows[:, lo + 1] * frac[None, :]
    out = np.clip(out, 0.0, 1.0)
    out[out < INK_THRESHOLD] = 0.0
    return out


def _ink(index: int, size: int) -> np.ndarray:
    """The glyph cropped to its tight ink box."""
    g = glyph(index, size)
    ys, xs = np.nonzero(g)
    return g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _pick(rng: np.random.Generator, split: str, exclude: set[int]) -> tuple[int, int]:
    pools = digit_pools()[split]
    choices = [c for c in range(10) if c not in exclude]
    label = choices[int(rng.integers(len(choices)))]
    pool = pools[label]
    return label, int(pool[int(rng.integers(len(pool)))])


def _place_in_row(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Top-left corners for ink boxes that are disjoint in x (so left-to-right order is unambiguous)."""
    free = CANVAS - sum(w for _, w in shapes) - GAP * (len(shapes) - 1)
    if free < 0:
        return None
    # Split the free space into len+1 random gaps (stars and bars over integers).
    cuts = np.sort(rng.integers(0, free + 1, size=len(shapes)))
    x, prev, out = 0, 0, []
    for (h, w), cut in zip(shapes, cuts):
        x += int(cut) - prev
        prev = int(cut)
        out.append((int(rng.integers(CANVAS - h + 1)), x))
        x += w + GAP
    return out


def _place_anywhere(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Top-left corners for ink boxes that do not overlap (with GAP) in 2-D; rejection sampling."""
    placed: list[tuple[int, int, int, int]] = []
    for h, w in shapes:
        for _ in range(50):
            y, x = int(rng.integers(CANVAS - h + 1)), int(rng.integers(CANVAS - w + 1))
            if all(x + w + GAP <= bx0 or bx1 + GAP <= x or y + h + GAP <= by0 or by1 + GAP <= y
                   for bx0, by0, bx1, by1 in placed):
                placed.append((x, y, x + w, y + h))
                break
        else:
            return None
    return [(y0, x0) for x0, y0, _, _ in placed]


def render(
    rng: np.random.Generator, split: str, count: int, *, distinct: bool = False, in_a_row: bool = True
) -> Scene:
    """Paste `count` digits from `split`'s pool on a photo background.

    `in_a_row`: ink boxes disjoint in x (captions read left to right); otherwise only non-overlapping.
    `distinct`: no two digits share a class (a grounding query must name exactly one digit).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    bg = background(rng)
    while True:
        labels_idx: list[tuple[int, int]] = []
        for _ in range(count):
            labels_idx.append(_pick(rng, split, {l for l, _ in labels_idx} if distinct else set()))
        sizes = rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1, size=count)
        inks = [_ink(i, int(s)) for (_, i), s in zip(labels_idx, sizes)]
        place = _place_in_row if in_a_row else _place_anywhere
        corners = place(rng, [ink.shape for ink in inks])
        if corners is not None:
            break
    canvas = bg.copy()
    digits, alphas = [], []
    for (label, index), ink, (y, x) in zip(labels_idx, inks, corners):
        h, w = ink.shape
        alpha = np.zeros((CANVAS, CANVAS))
        alpha[y : y + h, x : x + w] = ink
        color = _ink_color(bg[y : y + h, x : x + w])
        canvas = canvas * (1 - alpha[:, :, None]) + color * alpha[:, :, None]
        digits.append(Digit(label, index, (x, y, x + w, y + h)))
        alphas.append(alpha)
    order = sorted(range(count), key=lambda i: (digits[i].box[0], digits[i].box[1]))
    return Scene(
        image=_to_uint8(canvas),
        background=_to_uint8(bg),
        digits=tuple(digits[i] for i in order),
        alphas=tuple(alphas[i] for i in order),
    )


@dataclass(frozen=True)
class NamedCrop:
    """A fixed view of a bundled photo: top-left `(top, left)` in the photo, area-downscaled by `scale`."""

    photo: str
    scale: int
    top: int
    left: int


NAMED_CROPS = (
    NamedCrop("camera", 2, 248, 40),  # the cameraman's dark coat: dark grey, mean ~85
    NamedCrop("moon", 2, 336, 224),  # flat grey surface with dark specks: mid grey, ~114
    NamedCrop("page", 2, 24, 256),  # lines of printed text: bright grey, ~162
    NamedCrop("coffee", 2, 64, 240),  # the cup seen from above: orange-brown, ~(161, 131, 105)
    NamedCrop("stereo_motorcycle", 1, 176, 352),  # the red tank: red, ~(159, 104, 103)
    NamedCrop("chelsea", 2, 128, 184),  # the cat's nose and fur: tan, ~(136, 116, 101)
)
"""The backgrounds of `named_scene`, one fixed crop per photo (independent of seed and split).

Text-to-image and image infilling work on 8x8 VQ codes of a 32 px downscale, with a tiny model
trained for a few hundred CPU steps: the image must follow from the caption. So each named photo is
one fixed crop, and the crops were picked (among crops of 1-2x scale with visible texture) so that
their mean colours after the contrast cut stay >= 25 apart in RGB at 32 px, both over the whole
crop and over the ring outside the digit: three greys of clearly different brightness plus three
warm colours (orange, red, tan), each also with its own texture (coat folds, specks, text lines, cup
rim, tank edge, fur). Grey textures of similar mean (brick, grass, gravel, coins) were left out:
after the contrast cut they would differ only in fine texture a 32 px, 8x8-code model barely sees.
"""
NAMED_PHOTOS = tuple(crop.photo for crop in NAMED_CROPS)
"""The photo names `named_scene` accepts (in `NAMED_CROPS` order)."""
NAMED_DIGIT_SIZE = 40
"""Side of the square a `named_scene` digit's 8x8 cell spans: large, so its shape survives 8x8 codes."""


def photo_word(photo: str) -> str:
    """The readable name a caption uses for a photo ("stereo_motorcycle" -> "stereo motorcycle")."""
    return photo.replace("_", " ")


def pick_digit(rng: np.random.Generator, split: str) -> tuple[int, int]:
    """A random `(label, load_digits index)` from `split`'s pool (uniform class, then instance)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return _pick(rng, split, set())


@functools.cache
def named_background(photo: str) -> np.ndarray:
    """The fixed CANVAS x CANVAS x 3 uint8 background of `photo` (see `NAMED_CROPS`), read-only."""
    crops = {crop.photo: crop for crop in NAMED_CROPS}
    if photo not in crops:
        raise ValueError(f"photo must be one of {', '.join(NAMED_PHOTOS)}, got {photo!r}")
    crop = crops[photo]
    image = _to_uint8(_crop(_photos()[PHOTOS.index(photo)], crop.scale, crop.top, crop.left))
    image.flags.writeable = False
    return image


@functools.cache
def _named_ink_color(photo: str) -> float:
    """`render`'s black-or-white rule, applied to the fixed centred digit cell of the photo's crop.

    A fixed region (not each digit's own ink box) makes the ink colour a function of the photo
    alone, so the caption determines it.
    """
    start = (CANVAS - NAMED_DIGIT_SIZE) // 2
    cell = slice(start, start + NAMED_DIGIT_SIZE)
    return _ink_color(named_background(photo)[cell, cell])


def named_scene(photo: str, label: int, index: int) -> np.ndarray:
    """`load_digits` digit `index` (of class `label`) at `NAMED_DIGIT_SIZE`, its ink box centred on
    the fixed crop of `photo`: CANVAS x CANVAS x 3 uint8.

    Only the handwriting varies between two scenes of the same (photo, label): the position, size,
    background and ink colour are fixed, so a caption naming the digit and photo nearly determines
    the image, and everything outside the centred ink box is the photo's crop pixel for pixel.
    """
    if int(_digits()[1][index]) != label:
        raise ValueError(f"load_digits index {index} is a {WORDS[int(_digits()[1][index])]}, not a {WORDS[label]}")
    ink = _ink(index, NAMED_DIGIT_SIZE)
    h, w = ink.shape
    y, x = (CANVAS - h) // 2, (CANVAS - w) // 2
    alpha = np.zeros((CANVAS, CANVAS))
    alpha[y : y + h, x : x + w] = ink
    canvas = named_background(photo) * (1 - alpha[:, :, None]) + _named_ink_color(photo) * alpha[:, :, None]
    return _to_uint8(canvas)


def _ink_color(region: np.ndarray) -> float:
    """Black or white ink, whichever stands out more from the background `region` under a digit.

    Decided on integers, so no float summation order can flip it between machines.
    """
    pixels = _to_uint8(region).astype(np.int64)
    return 0.0 if int(pixels.sum()) >= 128 * pixels.size else 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 array as PNG with fixed options (same pixels -> same bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()
