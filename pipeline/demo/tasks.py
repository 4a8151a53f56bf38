"""The demo generators: one pyarrow Table per (task, split), deterministic in (split, size, seed).

Every generator has the signature `(split, size, seed, corrupt=0) -> pyarrow.Table` and draws from
its own random stream derived from `(seed, generator name, split)`, so tasks and splits never share
randomness and changing one size does not change another split. Columns are plain strings or PNG
bytes (no integer columns: a box is the string "x0,y0,x1,y1", a count is a word), so the instruction
decides what each column means; the one exception, detection, has list<string> columns (one element
per object, for a repeat group `( ... )*`).

`corrupt` damages that many rows at seed-determined positions so the materialiser's reject path can
be shown: images become truncated PNGs; for grounding every second damaged row keeps its image but
gets a box outside the 64x64 image instead; for detection every second damaged row keeps its image
but has one label fewer than boxes (an unequal-length repeat group); infill text becomes null;
speech audio becomes, in turn, a file cut inside its header, a WAV with zero frames, or a float WAV
holding NaN samples; the video, table and motion generators damage rows their own way (see their
modules). The damaged row indices are in the table's schema metadata under `ofasys.demo` (json),
with the generator, split, size and seed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.demo import images, motion, speech, tables, text, video

QUESTION = "how many digits are there?"
COUNTS = (1, 2, 3)
"""Digits per image for counting VQA (answers are the words one/two/three)."""
CAPTION_COUNTS = (1, 2)
"""Digits per image for captioning and grounding (SETUP.md calibration: 1-2 learns)."""
DETECTION_COUNTS = (0, 1, 2, 3)
"""Digits per detection image (zero included: the model must also learn to emit no object)."""
DETECTION_TENTHS = (1, 3, 3, 3)
"""Chance of each of `DETECTION_COUNTS`, in tenths (drawn as an integer, so exact on every CPU)."""
META_KEY = b"ofasys.demo"


def _rng(seed: int, name: str, split: str, stream: str = "rows") -> np.random.Generator:
    """A generator keyed by stable hashes of the names (Python's `hash` is salted per process)."""
    key = int.from_bytes(hashlib.sha256(f"{name}\0{split}\0{stream}".encode()).digest()[:8], "big")
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, key])


def _check(split: str, size: int, corrupt: int) -> None:
    if split not in images.SPLITS:
        raise ValueError(f"split must be one of {', '.join(images.SPLITS)}, got {split!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if not 0 <= corrupt <= size:
        raise ValueError(f"corrupt must be between 0 and size ({size}), got {corrupt}")


def _corrupt_rows(seed: int, name: str, split: str, size: int, corrupt: int) -> list[int]:
    if corrupt == 0:
        return []
    rng = _rng(seed, name, split, "corrupt")
    return sorted(int(i) for i in rng.choice(size, size=corrupt, replace=False))


def _truncated(png: bytes) -> bytes:
    """A PNG cut after its header: a realistic 'truncated file' that no decoder accepts."""
    return png[:33]


def _table(columns: dict[str, pa.Array], name: str, split: str, size: int, seed: int,
           corrupt_rows: list[int], **extra: object) -> pa.Table:
    meta = {"generator": name, "split": split, "size": size, "seed": int(seed),
            "corrupt_rows": corrupt_rows, **extra}
    table = pa.table(columns)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})


def table_meta(table: pa.Table) -> dict:
    """The `ofasys.demo` metadata a generator attached to its table."""
    return json.loads((table.schema.metadata or {})[META_KEY])


def describe(words: list[str]) -> str:
    """Caption sentence for digit words in left-to-right order.

    Sentences rather than bare digit words, so that corpus BLEU-4 (the usual captioning metric) has
    4-grams to count: "a handwritten three" / "a handwritten three to the left of a five".
    """
    if len(words) == 1:
        return f"a handwritten {words[0]}"
    return f"a handwritten {words[0]} " + " ".join(f"to the left of a {w}" for w in words[1:])


def caption(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`img` (PNG), `cap`: a sentence naming the digits left to right (see `describe`)."""
    _check(split, size, corrupt)
    rng = _rng(seed, "caption", split)
    bad = set(_corrupt_rows(seed, "caption", split, size, corrupt))
    imgs, caps = [], []
    for row in range(size):
        scene = images.render(rng, split, int(rng.choice(CAPTION_COUNTS)))
        png = images.png_bytes(scene.image)
        imgs.append(_truncated(png) if row in bad else png)
        caps.append(describe([d.word for d in scene.digits]))
    return _table({"img": pa.array(imgs, pa.binary()), "cap": pa.array(caps, pa.string())},
                  "caption", split, size, seed, sorted(bad))


def grounding(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`img`, `query`: the word of a digit in the image (no other digit there has that class),
    `region`: its tight ink box "x0,y0,x1,y1" in pixel edges of the 64x64 image."""
    _check(split, size, corrupt)
    rng = _rng(seed, "grounding", split)
    bad = _corrupt_rows(seed, "grounding", split, size, corrupt)
    bad_img, bad_box = set(bad[0::2]), set(bad[1::2])
    imgs, queries, regions = [], [], []
    for row in range(size):
        scene = images.render(rng, split, int(rng.choice(CAPTION_COUNTS)), distinct=True)
        digit = scene.digits[int(rng.integers(len(scene.digits)))]
        x0, y0, x1, y1 = digit.box
        if row in bad_box:  # shifted right by a whole canvas: outside the image
            x0, x1 = x0 + images.CANVAS, x1 + images.CANVAS
        png = images.png_bytes(scene.image)
        imgs.append(_truncated(png) if row in bad_img else png)
        queries.append(digit.word)
        regions.append(f"{x0},{y0},{x1},{y1}")
    return _table({"img": pa.array(imgs, pa.binary()), "query": pa.array(queries, pa.string()),
                   "region": pa.array(regions, pa.string())},
                  "grounding", split, size, seed, bad,
                  corrupt_image_rows=sorted(bad_img), corrupt_box_rows=sorted(bad_box))


def vqa(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`img`, `question` ("how many digits are there?"), `answer` ("one" | "two" | "three").

    Counting, because it is what learned in calibration; the three counts are equally likely, so
    the majority baseline is about 1/3. Digits are placed anywhere without overlap.
    """
    _check(split, size, corrupt)
    rng = _rng(seed, "vqa", split)
    bad = set(_corrupt_rows(seed, "vqa", split, size, corrupt))
    imgs, answers = [], []
    for row in range(size):
        count = int(rng.choice(COUNTS))
        scene = images.render(rng, split, count, in_a_row=False)
        png = images.png_bytes(scene.image)
        imgs.append(_truncated(png) if row in bad else png)
        answers.append(images.WORDS[count])
    return _table({"img": pa.array(imgs, pa.binary()), "question": pa.array([QUESTION] * size, pa.string()),
                   "answer": pa.array(answers, pa.string())},
                  "vqa", split, size, seed, sorted(bad))


def _detection_count(rng: np.random.Generator) -> int:
    """A count from `DETECTION_COUNTS` with `DETECTION_TENTHS` chances: one integer draw in 0..9."""
    tenth = int(rng.integers(sum(DETECTION_TENTHS)))
    return int(np.searchsorted(np.cumsum(DETECTION_TENTHS), tenth, side="right"))


def detection(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`img` (PNG), `boxes`: list<string>, one tight ink box "x0,y0,x1,y1" (pixel edges of the 64x64
    image, as grounding writes) per digit, `labels`: list<string>, the digit words in the same order.

    For object detection, `( [BOX:boxes] [TEXT:labels,closed_set] )*`: 0-3 digits per image (chances
    0.1/0.3/0.3/0.3, see `DETECTION_TENTHS`), placed anywhere without overlap. The objects are listed
    in a deterministic order, left to right by box x0 then y0, so a decoder learns one order rather
    than having to guess among permutations.

    Damage alternates two kinds: a truncated PNG (`corrupt_image_rows`), and a row whose `labels` is
    one shorter than its `boxes` (`corrupt_label_rows`; materialisation must reject a repeat group of
    unequal lengths). A label row always has at least one box: if its own scene drew no digit, it
    shows a 1-3 digit scene from a separate stream instead, so the damage never changes the clean rows.
    """
    _check(split, size, corrupt)
    rng = _rng(seed, "detection", split)
    spare = _rng(seed, "detection", split, "corrupt_scenes")  # scenes for label rows that drew none
    bad = _corrupt_rows(seed, "detection", split, size, corrupt)
    bad_img, bad_label = set(bad[0::2]), set(bad[1::2])
    imgs, boxes, labels = [], [], []
    for row in range(size):
        scene = images.render(rng, split, _detection_count(rng), in_a_row=False)
        if row in bad_label and not scene.digits:
            scene = images.render(spare, split, int(spare.integers(1, 4)), in_a_row=False)
        png = images.png_bytes(scene.image)
        imgs.append(_truncated(png) if row in bad_img else png)
        boxes.append([",".join(str(v) for v in d.box) for d in scene.digits])
        words = [d.word for d in scene.digits]
        labels.append(words[:-1] if row in bad_label else words)
    return _table({"img": pa.array(imgs, pa.binary()),
                   "boxes": pa.array(boxes, pa.list_(pa.string())),
                   "labels": pa.array(labels, pa.list_(pa.string()))},
                  "detection", split, size, seed, bad,
                  corrupt_image_rows=sorted(bad_img), corrupt_label_rows=sorted(bad_label))


def infill(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`text`: 6-10 consecutive words of Python's documentation, all among its 300 most frequent
    words. Masking is the instruction's job (`mask_ratio`), applied at training time."""
    _check(split, size, corrupt)
    rng = _rng(seed, "infill", split)
    bad = set(_corrupt_rows(seed, "infill", split, size, corrupt))
    texts = [text.window(rng, split) for _ in range(size)]
    texts = [None if row in bad else t for row, t in enumerate(texts)]
    return _table({"text": pa.array(texts, pa.string())}, "infill", split, size, seed, sorted(bad),
                  corpus_sha256=text.corpus_fingerprint())


def _speech_table(name: str, draw, split: str, size: int, seed: int, corrupt: int) -> pa.Table:
    """`wav` (encoded audio bytes) and `text` of `size` utterances drawn by `draw(rng, split)`, damaged
    rows by kind in turn (`speech.DAMAGE`), all from the generator's own stream."""
    _check(split, size, corrupt)
    rng = _rng(seed, name, split)
    bad = _corrupt_rows(seed, name, split, size, corrupt)
    by_kind = {kind: bad[i :: len(speech.DAMAGE)] for i, kind in enumerate(speech.DAMAGE)}
    damage = {row: kind for kind, rows in by_kind.items() for row in rows}
    utts = [draw(rng, split) for _ in range(size)]
    wavs = speech.render_all(utts, damage)
    return _table({"wav": pa.array(wavs, pa.binary()), "text": pa.array([u.text for u in utts], pa.string())},
                  name, split, size, seed, bad, synthesiser=speech.espeak_version(),
                  **{f"corrupt_{kind}_rows": rows for kind, rows in by_kind.items()})


def asr(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`wav` (encoded audio bytes: FLAC, WAV or Ogg/Vorbis at 8-44.1 kHz, mono or stereo), `text`:
    the 2-4 word sentence spoken (see `pipeline.demo.speech`). Serves both speech recognition and
    speech-to-phones: the phones are derived from `text` when the task is materialised."""
    return _speech_table("asr", speech.draw, split, size, seed, corrupt)


def tts(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`wav`, `text`: a 2-4 word sentence and its speech by one speaker at one pace (16 kHz FLAC; see
    `speech.draw_single_speaker`), for text-to-speech; damaged rows as `asr`'s."""
    return _speech_table("tts", speech.draw_single_speaker, split, size, seed, corrupt)


def text_to_image(split: str, size: int, seed: int, corrupt: int = 0) -> pa.Table:
    """`img` (PNG), `cap`: "a handwritten three on the coffee photo" (see `images.named_scene`).

    For generating images (caption -> image codes) and image infilling: the caption fixes the photo
    crop, the digit's class, size, place and ink colour, so only the handwriting is left to guess
    and a model can clearly beat the per-position most common code. Digits come from the split's
    pool, so test images show handwriting never seen in training.
    """
    _check(split, size, corrupt)
    rng = _rng(seed, "text_to_image", split)
    bad = set(_corrupt_rows(seed, "text_to_image", split, size, corrupt))
    imgs, caps = [], []
    for row in range(size):
        photo = images.NAMED_PHOTOS[int(rng.integers(len(images.NAMED_PHOTOS)))]
        label, index = images.pick_digit(rng, split)
        png = images.png_bytes(images.named_scene(photo, label, index))
        imgs.append(_truncated(png) if row in bad else png)
        caps.append(f"{describe([images.WORDS[label]])} on the {images.photo_word(photo)} photo")
    return _table({"img": pa.array(imgs, pa.binary()), "cap": pa.array(caps, pa.string())},
                  "text_to_image", split, size, seed, sorted(bad), photos=list(images.NAMED_PHOTOS))


GENERATORS: dict[str, Callable[..., pa.Table]] = {
    "caption": caption,
    "text_to_image": text_to_image,
    "grounding": grounding,
    "vqa": vqa,
    "detection": detection,
    "infill": infill,
    "asr": asr,
    "tts": tts,
    "video_caption": video.caption,
    "motion_label": motion.label_table,
    "table_to_text": tables.table_to_text,
    "text_to_sql": tables.text_to_sql,
}
"""Generator name (as in params `source.generator`) -> `(split, size, seed, corrupt=0) -> Table`."""

WRITES_FILES = frozenset({"text_to_sql"})
"""Generators whose rows name a file beside the splits (the SQLite database SQL runs on): they also
take `files_dir`, the directory the ingest stage writes the task's raw data to."""
