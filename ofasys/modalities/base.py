"""What a modality is: one class that declares everything the system needs to know about it.

A modality file (`ofasys/modalities/<name>.py`) holds one `Modality` subclass; the registry
(`ofasys.modalities.MODALITIES`, a plain dict) maps its name to an instance. Every other part of the
system asks the registry instead of comparing modality names:

- the instruction parser builds its tables from `kinds`, `attributes`, `preprocess` and `adaptors`;
- materialisation calls `materialise(value, attrs, ctx)` once per cell (everything that is the same
  every epoch) and `encoder_positions` to count what the sample will occupy in the model;
- collation calls `collate` for a non-token slot (randomness per epoch, e.g. SpecAugment, happens
  there) and gets a generic `(kind, tensor, mask)` encoder segment;
- the model builds `build_adaptor(model_config)` for every modality it embeds, keyed by name, and a
  segment-type embedding keyed by name, so adding a modality never changes an existing weight's shape;
- generation asks `output_step` for the decoding constraint of an output slot and `decode_output`
  for its typed value.

Modality files import no torch at module level: the parser reads the declarations when params load,
and that must stay fast. Torch is imported inside the methods that need it (`build_adaptor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ofasys.vocab import UnifiedVocab

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch.nn as nn

    from ofasys.model.config import ModelConfig


class RejectRow(Exception):
    """A raw value that can't be materialised; the row goes to rejects.jsonl with `reason`.

    Reasons must be deterministic text (no object reprs or addresses): rejects.jsonl is part of the
    byte-identical output.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RowContext:
    """What a modality may need beyond its own cell, for one row."""

    vocab: UnifiedVocab
    image_size: int
    """The task's square image resolution (IMAGE, and the frames of VIDEO)."""
    base_dir: Path | None = None
    """Directory relative media paths are resolved against: the directory of the row's source file
    (contracts C2), or the raw parquet's directory for rows without one (demo rows, older data)."""
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per column, the meta recorded by the columns materialised before this one in the row (e.g.
    an image's original width and height, which BOX quantises against)."""
    columns: dict[str, list[str]] = field(default_factory=dict)
    """Modality name -> the task's columns of that modality (what `Modality.needs` refers to)."""
    seed: int = 0
    """The run seed: for modalities whose materialisation draws random numbers (keyed per row)."""
    key: str = ""
    """The row's stable identity (`<split>-<row>`), for keyed randomness."""
    image_codes: Any = None
    """The VQ image tokenizer (`ofasys.vq.VQTokenizer`) that turns an IMAGE with
    `preprocess=image_vqgan` into codes; None when the task has no such slot."""

    def needed_column(self, modality: str) -> str:
        """The one column of `modality` this row's task has (plan_members checked there is one)."""
        cols = self.columns.get(modality, [])
        if len(cols) != 1:
            raise RuntimeError(f"the task needs exactly one {modality} column, has {cols} (internal check missed)")
        return cols[0]


@dataclass(frozen=True)
class Materialised:
    """What `Modality.materialise` returns for one cell."""

    array: np.ndarray
    """The array stored in the shard (one `.npy` member)."""
    meta: Mapping[str, Any] | None = None
    """Per-column metadata recorded in the sample json (e.g. original image width/height)."""
    ref: Any = None
    """JSON-able raw value recorded in `refs` when the column is on the output side."""


@dataclass(frozen=True)
class OutputStep:
    """How generation emits one output slot (see `ofasys.data.plan`); built by `Modality.output_step`.

    Three shapes cover every token output:
    - "fixed":  exactly `length` ids, each from `allowed` (BOX: 4 bins; a VQ image: its grid of codes);
    - "run":    ids from `allowed` until `terminator`, at least `min_length`, at most `max_length`
                (TEXT, PHONE, STRUCT);
    - "closed": a path through `trie` (the closed set's label ids), then `terminator` (CATEGORY,
                closed-set TEXT);
    - "frames": a frame output's placeholders, walked like a run of `<mask>` until `terminator` (MOTION,
                speech; `Modality.frame_output`), whose frames the model's output head makes.
    """

    kind: str
    column: str
    modality: str
    allowed: range | tuple[int, ...] = ()
    length: int = 0
    terminator: int | None = None
    max_length: int = 0
    min_length: int = 0
    trie: Any = None


def check_head_settings(config: Any, positive: Sequence[str]) -> None:
    """ValueError naming the field unless `positive` fields are > 0, `kernel_size` is a positive odd
    number (padding keeps frames aligned) and `loss_weight` is > 0: what every output head's settings
    share."""
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    if config.kernel_size <= 0 or config.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {config.kernel_size}")
    if not config.loss_weight > 0:
        raise ValueError(f"loss_weight must be positive, got {config.loss_weight}")


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN
        return True
    return False


def media_path(value: str | Path, base_dir: Path | None, what: str) -> Path:
    """The file a media cell names: absolute, or relative to `base_dir` (the row's source directory).
    A missing or empty file is a RejectRow showing the path as written in the data, not the resolved
    one, so reasons stay the same on every machine (and say what a user finds, not a decoder's error)."""
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    shown = str(value) if len(str(value)) <= 200 else str(value)[:200] + "..."
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:  # e.g. a name too long for the file system: not a file either way
        size = None
    if size is None:
        raise RejectRow(f"{what} file not found ({shown})")
    if size == 0:
        raise RejectRow(f"{what} file is empty (0 bytes): {shown}")
    return path


NO_ASSETS: Mapping[str, Any] = {}
IMAGE_CODE_GRID = "image_code_grid"
"""Key of `assets` (see `Modality.output_step`): codes per side of the VQ image tokenizer."""
FRAME_STATS = "frame_stats"
"""Key of `assets` (and of a manifest): per stored frame-output array (`<column>.<tag>`), the train
split's per-feature `mean` and `std` (what the model's frame targets are normalised by) and `max_steps`
(the most decoder steps a train sample's frames took: the generation cap)."""
DEFAULT_MAX_FRAME_STEPS = 256
"""Generation cap, in decoder steps, of a frame output when neither its slot nor its task's train split
says more."""
FRAME_CAP_MARGIN = 1.25
"""A frame output may run this much longer than the train split's longest (a slower reading of a text)."""

SUPPORTED = None
"""Value of a `preprocess` / `adaptors` entry that works (any other value is why it doesn't, yet)."""


class Modality:
    """Base class: defaults for a token modality; override what differs (see module docstring)."""

    name: ClassVar[str]
    """The name written in instructions: `[NAME:column]`."""
    doc: ClassVar[str] = ""
    """One line for the README's modality table and error messages."""
    dtype: ClassVar[str] = "int32"
    """dtype of the stored array (recorded in the manifest, checked by readers)."""
    attributes: ClassVar[Mapping[str, frozenset[str]]] = {}
    """Kind -> the slot attributes that mean something on it (the parser refuses others there).
    The plain kind is `name`; a preprocess may make a slot another kind (see `kinds`)."""
    materialise_attrs: ClassVar[tuple[str, ...]] = ()
    """Slot attributes that change the stored array; slots sharing a column must agree on them."""
    preprocess: ClassVar[Mapping[str, str | None]] = {"default": SUPPORTED}
    """`preprocess=` values (OFASys's names) -> SUPPORTED, or why not yet (refused at params load
    with "not supported yet", never as invalid)."""
    adaptors: ClassVar[Mapping[str, str | None]] = {"default": SUPPORTED}
    """`adaptor=` values (OFASys's names) -> SUPPORTED, or why not yet."""
    token_run: ClassVar[bool] = True
    """Whether the stored array is a run of unified token ids: it then joins the encoder's token
    segments, takes automatic `<BOS>`/`<EOS>`, and can be generated. False for embedded modalities
    (IMAGE pixels, AUDIO fbank, ...), which go through their own adaptor."""
    needs: ClassVar[tuple[str, ...]] = ()
    """Modalities this one is materialised after and relative to (BOX is in pixels of its IMAGE):
    a task using this modality needs exactly one column of each."""
    needs_fix: ClassVar[str] = ""
    """The fix shown when a task lacks (or has several of) a needed column."""
    status: ClassVar[str | None] = SUPPORTED
    """SUPPORTED, or why the modality parses in instructions but can't be materialised yet."""
    text_values: ClassVar[bool] = False
    """Whether column values are text the BPE encodes (the assets stage trains the BPE on them)."""
    output_field: ClassVar[str | None] = None
    """Name of the typed accessor of an inference `Prediction` that returns this modality's output
    (`.text`, `.box`, ...)."""
    media_files: ClassVar[bool] = False
    """Whether a column value may be a path to a media file (read at materialisation, so its
    content is part of the task's source fingerprint)."""
    shrink_hint: ClassVar[str] = "shorten the slot"
    """How to make an embedded slot take fewer encoder positions (for the over-long-sample fix)."""
    vocab_block: ClassVar[str | None] = None
    """The block of the unified vocabulary its tokens live in beyond text ("bins", "codes",
    "phones"), or None."""
    pictures: ClassVar[bool] = False
    """Whether its column values are still pictures (IMAGE, as pixels or codes): what the VQ image
    tokenizer may learn from."""
    frame_output: ClassVar[bool] = False
    """Whether an output slot of it is generated as continuous frames (MOTION's joint rotations,
    AUDIO's fbank with `audio_tgt_fbank`) rather than tokens: the decoder runs over one placeholder
    (`<mask>`) step per stored frame row, learning to continue (`<mask>`) or stop (`<eos>`) as tokens,
    and the modality's output head (`build_output_head`) turns the states of those steps into frames."""
    speech: ClassVar[bool] = False
    """Whether its values are speech: a speech recognition task reads such an input slot (and
    transcribes generated speech, `tts_wer`)."""
    input_side: ClassVar[bool] = True
    """False for a variant that is only ever generated (AUDIO with `audio_tgt_fbank`)."""
    diffusion: ClassVar[bool] = False
    """Whether its output head is trained by denoising (the collator then draws each frame output's
    noise and noise level, so that a resumed run draws the same)."""
    head_config: ClassVar[type | None] = None
    """Dataclass of the output head's settings (`model.output_heads.<NAME>` in params.yaml)."""
    member_tag: ClassVar[str | None] = None
    """What names its stored array after the column (`<column>.<tag>.npy`); the modality's name in
    lower case when None. A variant that stores other data (IMAGE as VQ codes: "image_codes") has
    its own, so one column may be stored both ways in a task."""

    @property
    def tag(self) -> str:
        return self.member_tag or self.name.lower()

    def variant(self, preprocess: str | None) -> "Modality":
        """The object that handles a slot with this `preprocess=`: this one, unless the preprocess
        makes the slot another kind of data (an IMAGE with `image_vqgan` is a run of VQ code tokens,
        not pixels, and is handled by its own class in the same file)."""
        return self

    # ----- the instruction language ---------------------------------------------------------------
    def kinds(self, preprocess: str | None) -> frozenset[str]:
        """The kinds a slot with this `preprocess=` counts as (attribute applicability)."""
        return frozenset({self.name})

    def is_token_run(self, preprocess: str | None) -> bool:
        """Whether a slot with this `preprocess=` is a token run (see `token_run`)."""
        return self.variant(preprocess).token_run

    # ----- materialisation ------------------------------------------------------------------------
    def shape(self, image_size: int) -> list[int | None]:
        """Shape rule of the stored array for the manifest (None = variable)."""
        return [None]

    def stored_shape(self, image_size: int, attrs: Mapping[str, Any]) -> list[int | None]:
        """`shape` for a slot with these materialise attrs (what the manifest records); a modality whose
        layout a slot attribute chooses overrides it."""
        return self.shape(image_size)

    def layout_problem(self, entry: Mapping[str, Any], image_size: int) -> str | None:
        """Why a manifest slot entry (see `ofasys.data.members.slot_entry`) describes arrays this code
        does not read (shards of an earlier layout), or None. Checked when a manifest is read."""
        return None

    def materialise(self, value: Any, attrs: Mapping[str, Any], ctx: RowContext) -> Materialised:
        raise NotImplementedError

    def token_length(self, array: np.ndarray) -> int:
        """Unified tokens in the stored array (0 for embedded modalities): the sample's lengths."""
        return int(array.shape[0]) if self.token_run else 0

    def encoder_positions(self, array: np.ndarray, attrs: Mapping[str, Any], model: "ModelConfig") -> int:
        """Encoder positions the slot occupies in `model` (patches, frames, or its tokens)."""
        return int(array.shape[0])

    def records_meta(self, attrs: Mapping[str, Any]) -> frozenset[str]:
        """Keys a slot with these attributes may record in its sample's meta for evaluation (STRUCT
        schemas: the `database` their SQL runs on); params load checks a metric's needs against it."""
        return frozenset()

    def label(self, value: Any, attrs: Mapping[str, Any]) -> str:
        """The normalised label of a closed-set value (what a `closed_set` slot collects)."""
        raise NotImplementedError(f"{self.name} has no closed set")

    def text_for_vocab(self, value: Any, attrs: Mapping[str, Any]) -> Any:
        """What of a raw column value the text BPE is trained on (the assets stage keeps strings and
        the strings of a list): the value itself, unless the modality stores a text derived from it
        (STRUCT: its linearisation, so the BPE learns the separators and names it will encode)."""
        return value

    def vocab_tokens(self, values: Iterable[Any], attrs: Mapping[str, Any]) -> set[str]:
        """Entries of the vocabulary block this modality fills from data (PHONE: the phones of the
        train values); the assets stage collects them. Empty for the others."""
        return set()

    # ----- collation (non-token modalities) -------------------------------------------------------
    def collate(self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any],
                rngs: Sequence[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Stack one slot's arrays of a batch -> (tensor data, B x L bool mask or None = all real).

        `rngs` (one per sample, seeded by (seed, epoch, sample key, column) by the collator, so a
        sample's augmentation does not depend on its batch) draw the per-epoch randomness such as
        SpecAugment; None at evaluation, where nothing is augmented."""
        raise NotImplementedError(f"{self.name} is a token modality; its ids join token segments")

    def adaptor_fits(self, adaptor: str, config: Any) -> str | None:
        """None when a slot's `adaptor=` value is what the model's adaptor settings build, else the fix."""
        return None

    # ----- the model ------------------------------------------------------------------------------
    default_adaptor: ClassVar[bool] = False
    """Whether a model config that names no adaptors still has this one (IMAGE, for older configs)."""
    legacy_model_keys: ClassVar[Mapping[str, str]] = {}
    """Top-level `ModelConfig` keys of older configs -> their key in this modality's adaptor settings."""
    adaptor_config: ClassVar[type | None] = None
    """Dataclass of the adaptor's own settings (`model.adaptors.<NAME>` in params.yaml)."""

    def build_adaptor(self, model: "ModelConfig") -> "nn.Module":
        """The module that embeds this modality's collated tensor: `forward(tensor, mask)` ->
        (B x L x d_model, B x L bool mask). Only for embedded (non-token) modalities."""
        raise NotImplementedError(f"{self.name} is a token modality; it uses the shared embedding")

    # ----- generation -----------------------------------------------------------------------------
    def output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab, *, terminator: int | None,
                    closed_labels: Sequence[str] | None, default_max: int,
                    assets: Mapping[str, Any] = NO_ASSETS) -> OutputStep:
        """The generation constraint of an output slot of this modality. `assets` holds what the run's
        assets fix beyond the vocabulary (`IMAGE_CODE_GRID`: the VQ tokenizer's grid side)."""
        raise NotImplementedError(f"generating {self.name} is not supported yet")

    def decode_output(self, ids: Sequence[int], vocab: UnifiedVocab, context: Mapping[str, Any]) -> Any:
        """The typed value of generated `ids`. `context` is the meta of the column this modality
        `needs` (e.g. the image's original size for BOX), empty otherwise."""
        raise NotImplementedError(f"decoding {self.name} is not supported yet")

    # ----- frame outputs (`frame_output`) ---------------------------------------------------------
    def build_output_head(self, model: "ModelConfig") -> "nn.Module":
        """The module that makes this modality's frames from decoder states (see `frame_output`):
        `loss(states, targets, mask, noise, level)` -> (loss summed over real frames, frames) and
        `generate(states, mask, noise)` -> frames, all in the normalised units of `FRAME_STATS`."""
        raise NotImplementedError(f"{self.name} has no output head")

    def decode_frames(self, frames: np.ndarray) -> Any:
        """The typed value of generated frames (steps x stored width, in the stored array's units)."""
        raise NotImplementedError(f"{self.name} has no frame output")

    def typed_output(self, value: Any, stats: Mapping[str, Any]) -> Any:
        """What `OFASys.inference(...)` hands users for a decoded frame output (a motion they can save
        and play, speech they can listen to); `stats` is its task's `FRAME_STATS` entry."""
        return value

    def save_output(self, value: Any, stem: Path, stats: Mapping[str, Any]) -> Path:
        """Write a decoded frame output as the file its users open (`<stem>.<suffix>`: a motion's .npz,
        speech's .wav), atomically; `stats` is its task's `FRAME_STATS` entry. Returns the path."""
        raise NotImplementedError(f"{self.name} has no frame output")

    def frame_steps(self, array: np.ndarray) -> int:
        """Decoder steps a stored frame-output array takes (one per stored row)."""
        return int(array.shape[0])

    def frame_output_step(self, column: str, attrs: Mapping[str, Any], vocab: UnifiedVocab,
                          terminator: int | None, assets: Mapping[str, Any]) -> OutputStep:
        """The generation constraint of a frame output: `<mask>` steps until `terminator`, at least one,
        at most the slot's `max_length` (in steps), else `FRAME_CAP_MARGIN` x the train split's longest,
        else `DEFAULT_MAX_FRAME_STEPS`."""
        if terminator is None:
            raise ValueError(f"a {self.name} output must be followed by <EOS> or prompt text (where it stops)")
        stats = dict(assets.get(FRAME_STATS) or {}).get(f"{column}.{self.tag}") or {}
        cap = self.max_steps(attrs)
        if cap is None:
            seen = int(stats.get("max_steps") or 0)
            cap = int(seen * FRAME_CAP_MARGIN) + 1 if seen else DEFAULT_MAX_FRAME_STEPS
        return OutputStep(kind="frames", column=column, modality=self.name, allowed=(vocab.mask,),
                          terminator=terminator, max_length=cap, min_length=1)

    def max_steps(self, attrs: Mapping[str, Any]) -> int | None:
        """The most decoder steps a slot's `max_length` allows, or None when it sets none."""
        value = attrs.get("max_length")
        return None if value is None else int(value)
