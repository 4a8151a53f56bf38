"""A gallery page per evaluated task: what the model saw, what it answered, and what was right.

Numbers say how often a model is right; a page of examples says how it is wrong. For each of the
first samples of the test split: the picture the model saw (when an input is an image, as stored in
the shard) with the predicted box in red and the reference box in green, the other inputs as text
(a question, a media path), the prediction beside the reference (as pictures when the output is an
image: its VQ codes decoded; as players when it is speech), and the sample's score. One
self-contained HTML file (images inline as PNG data), logged to MLflow by the evaluate stage.
"""

from __future__ import annotations

import base64
import html
import io
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GALLERY_SAMPLES = 24
"""Samples shown per task."""
SCALE = 3
"""Pictures are shown this many times their stored size (the demo stores 64 x 64)."""


@dataclass
class Example:
    key: str
    row_id: str
    inputs: Mapping[str, str]
    prediction: Any
    reference: Any
    score: float | None
    right: bool = False
    """Whether the output counts as right (the caller decides: equal, or a perfect score)."""
    picture: np.ndarray | None = None
    """An H x W x 3 uint8 input as stored in the shard (resized from the original)."""
    original_size: tuple[int, int] | None = None
    """(width, height) of the original picture, which boxes are expressed in."""
    extras: dict[str, Any] = field(default_factory=dict)
    output_pictures: dict[str, np.ndarray] = field(default_factory=dict)
    """For an image output: "prediction" / "reference" -> its decoded H x W x 3 uint8 picture, shown
    instead of the codes."""
    output_sounds: dict[str, bytes] = field(default_factory=dict)
    """For a speech output: "prediction" / "reference" -> WAV bytes, played in the page."""


def is_box(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, numbers.Real) for v in value))


def boxes_of(value: Any) -> list:
    """The boxes an output holds: itself when it is a box, each object's box when it is a list of
    objects (a detection: dicts whose box is their value of 4 numbers)."""
    if is_box(value):
        return [value]
    if isinstance(value, list):
        return [next((v for v in obj.values() if is_box(v)), None) for obj in value if isinstance(obj, Mapping)]
    return []


def picture_of(arrays: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """The first member that is a picture (H x W x 3 uint8), with its column."""
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3:
            return name.split(".")[0], a
    return None


def _picture_png(picture: np.ndarray, scale: int) -> str:
    from PIL import Image

    h, w = picture.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(picture).resize((w * scale, h * scale), Image.Resampling.NEAREST).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _output(example: Example, which: str) -> str:
    """A prediction or reference line: its decoded picture for an image output, else its text."""
    sound = example.output_sounds.get(which)
    if sound is not None:
        return (f'<div><b>{which}</b>:<audio controls src="data:audio/wav;base64,'
                f'{base64.b64encode(sound).decode("ascii")}"></audio></div>')
    picture = example.output_pictures.get(which)
    if picture is None:
        value = example.prediction if which == "prediction" else example.reference
        return f"<div><b>{which}</b>: {_text(value)}</div>"
    scale = max(1, 96 // max(picture.shape[:2]))
    return (f'<div><b>{which}</b>:<img src="data:image/png;base64,{_picture_png(picture, scale)}" '
            f'alt="{which}"></div>')


def _png(example: Example) -> str:
    from PIL import Image, ImageDraw

    assert example.picture is not None
    h, w = example.picture.shape[:2]
    img = Image.fromarray(example.picture).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST)
    if example.original_size:
        sx, sy = w * SCALE / example.original_size[0], h * SCALE / example.original_size[1]
        draw = ImageDraw.Draw(img)
        for value, color in ((example.reference, (0, 200, 0)), (example.prediction, (230, 0, 0))):
            for box in boxes_of(value):
                if box is not None:
                    x0, y0, x1, y1 = box
                    draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=color, width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _text(value: Any) -> str:
    if value is None:
        return "<i>(no output)</i>"
    if is_box(value):
        return html.escape("[" + ", ".join(f"{v:.1f}" for v in value) + "]")
    if isinstance(value, list) and all(isinstance(o, Mapping) for o in value):  # objects: their labels
        if not value:
            return "<i>(no objects)</i>"
        return html.escape(", ".join(
            " ".join(str(v) for k, v in o.items() if isinstance(v, str)) + (f" ({o['score']:.2f})" if "score" in o else "")
            for o in value))
    return html.escape(str(value))


def gallery_html(task: str, metric: str, examples: Sequence[Example]) -> str:
    """The page: one card per example (picture, inputs, prediction vs reference, score)."""
    cards = []
    for ex in examples:
        picture = f'<img src="data:image/png;base64,{_png(ex)}" alt="{html.escape(ex.key)}">' if ex.picture is not None else ""
        inputs = "".join(f"<div><b>{html.escape(k)}</b>: {html.escape(v)}</div>" for k, v in sorted(ex.inputs.items())
                         if ex.picture is None or not v.endswith(" bytes>"))
        score = "" if ex.score is None else f"{metric} {ex.score:.3g}"
        cards.append(
            f'<div class="card {"right" if ex.right else "wrong"}">{picture}'
            f'<div class="id">{html.escape(ex.key)} (id {html.escape(ex.row_id)}) {score}</div>{inputs}'
            f'{_output(ex, "prediction")}{_output(ex, "reference")}</div>')
    legend = ("<p>Boxes: <span style='color:#e60000'>predicted</span>, "
              "<span style='color:#00c800'>reference</span>.</p>") if any(boxes_of(e.reference) for e in examples) else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(task)}: {len(examples)} examples</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ width: 220px; border: 2px solid #ccc; padding: 6px; font-size: 12px; overflow-wrap: anywhere; }}
.card.right {{ border-color: #6c6; }} .card.wrong {{ border-color: #e88; }}
.card img {{ display: block; margin-bottom: 4px; image-rendering: pixelated; }}
.card audio {{ width: 100%; }}
.id {{ color: #666; margin-bottom: 4px; }}
</style></head>
<body><h2>{html.escape(task)}: the first {len(examples)} test samples</h2>{legend}
<div class="grid">{"".join(cards)}</div></body></html>
"""
