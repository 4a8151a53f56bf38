"""VIDEO: real clips (a pan over a real photo, encoded by PyAV as mp4/webm/gif) -> sampled frames
stored as uint8 pixels (or JPEGs with `jpeg_frames`), rejects, collation, old-layout refusal, and the
adaptor the model builds for it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ofasys.modalities import MODALITIES, RejectRow, RowContext
from ofasys.modalities.video import (
    DEFAULT_FRAMES,
    decode_frames,
    frame_layout,
    jpeg_bytes,
    pack_frames,
    read_video,
    sample_indices,
    unpack_frames,
)
from pipeline.demo.video import empty_mp4, encode

VIDEO = MODALITIES["VIDEO"]
WIDTH, HEIGHT, FRAMES, STEP = 80, 48, 10, 4
"""The test clip: an 80x48 window panning right over a photo by 4 px a frame, 10 frames at 10 fps."""
JPEG = {"jpeg_frames": True}
CLOSE = 6.0
"""Mean absolute pixel error (0-255) a stored frame stays under against the source frame it was
sampled from (codec, + JPEG with `jpeg_frames`; measured 2.5-3.8 here), while the pan's neighbouring frames are 16-23
away from it: the frame stored is the one sampled, not merely a similar one."""
CONTAINER_LIST = "mp4/mov, webm/mkv, avi or gif"


@pytest.fixture(scope="module")
def pan() -> tuple[np.ndarray, ...]:
    """Real footage stand-in: a window panning over scikit-image's astronaut photo."""
    import skimage.data

    photo = skimage.data.astronaut()
    return tuple(np.ascontiguousarray(photo[120 : 120 + HEIGHT, 150 + STEP * i : 150 + STEP * i + WIDTH])
                 for i in range(FRAMES))


@pytest.fixture(scope="module")
def clips(pan) -> dict[str, bytes]:
    return {c: encode(pan, c, 10) for c in ("mp4", "webm", "gif")}


def vctx(tmp_path, side: int = 64) -> RowContext:
    return RowContext(vocab=None, image_size=side, base_dir=tmp_path)  # VIDEO reads no vocabulary


def squashed(frame: np.ndarray, side: int) -> np.ndarray:
    """What IMAGE makes of a frame: the square bicubic squash."""
    return np.asarray(Image.fromarray(frame).resize((side, side), Image.Resampling.BICUBIC)).astype(np.int64)


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


# ----- materialisation ---------------------------------------------------------------------------

@pytest.mark.parametrize("side", [64, 32])
@pytest.mark.parametrize("container", ["mp4", "webm", "gif"])
def test_every_container_and_source_gives_the_evenly_sampled_frames(container, side, pan, clips, tmp_path):
    data = clips[container]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / f"x.{container}").write_bytes(data)
    ctx = vctx(tmp_path, side)
    out = VIDEO.materialise(data, {}, ctx)
    assert out.array.dtype == np.uint8 and out.array.shape == (DEFAULT_FRAMES, side, side, 3)
    assert out.meta == {"width": WIDTH, "height": HEIGHT, "fps": 10.0, "duration": 1.0, "frames": FRAMES}
    frames = decode_frames(out.array)
    assert frames.shape == (DEFAULT_FRAMES, side, side, 3) and frame_layout(out.array) == (DEFAULT_FRAMES, side)
    picked = sample_indices(FRAMES, DEFAULT_FRAMES)
    assert picked == [1, 3, 6, 8]
    for stored, i in zip(frames, picked):
        assert error(stored, squashed(pan[i], side)) < CLOSE
        for j in (i - 1, i + 1):  # not a neighbour: the right frame, in order
            assert error(stored, squashed(pan[j], side)) > 2 * CLOSE
    path = tmp_path / "clips" / f"x.{container}"
    for value in (path, str(path), f"clips/x.{container}", {"bytes": data, "path": "ignored"},
                  {"bytes": None, "path": f"clips/x.{container}"}, bytearray(data)):
        again = VIDEO.materialise(value, {}, ctx)
        assert again.array.tobytes() == out.array.tobytes() and again.meta == out.meta


def test_stored_frames_are_the_decoded_resized_frames_and_jpeg_frames_their_jpegs(clips, tmp_path):
    """By default the stored array is exactly the sampled frames as decoded and squashed; with
    `jpeg_frames` it holds exactly those frames' JPEGs, so the two layouts differ by JPEG's loss alone."""
    decoded, meta = read_video(clips["mp4"], 8, 64, tmp_path)
    pixels = VIDEO.materialise(clips["mp4"], {"max_length": 8}, vctx(tmp_path))
    assert pixels.array.flags.c_contiguous and pixels.meta == meta
    np.testing.assert_array_equal(pixels.array, np.stack(decoded))
    jpeg = VIDEO.materialise(clips["mp4"], {"max_length": 8, **JPEG}, vctx(tmp_path))
    side, jpegs = unpack_frames(jpeg.array)
    assert side == 64 and jpegs == [jpeg_bytes(f) for f in pixels.array] and jpeg.meta == meta
    assert all(j[:3] == b"\xff\xd8\xff" for j in jpegs)  # JPEG start-of-image markers
    assert jpeg.array.nbytes < pixels.array.nbytes / 3  # well under the raw pixels
    lossy = decode_frames(jpeg.array)
    assert lossy.shape == pixels.array.shape and 0 < error(lossy, pixels.array) < 3
    for attrs, out in (({"max_length": 8}, pixels), ({"max_length": 8, **JPEG}, jpeg)):  # byte-identical again
        assert VIDEO.materialise(bytes(clips["mp4"]), attrs, vctx(tmp_path)).array.tobytes() == out.array.tobytes()


def test_sample_indices_are_the_centres_of_equal_stretches():
    assert sample_indices(10, 4) == [1, 3, 6, 8]
    assert sample_indices(10, 1) == [5]
    assert sample_indices(10, 10) == list(range(10))
    assert sample_indices(2, 4) == [0, 0, 1, 1]  # a short clip repeats frames: always F of them
    assert sample_indices(1, 3) == [0, 0, 0]
    for total in range(1, 40):
        for frames in range(1, 12):
            idx = sample_indices(total, frames)
            assert len(idx) == frames and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < total
            if frames <= total:
                assert len(set(idx)) == frames


def test_max_length_is_the_number_of_frames(pan, clips, tmp_path):
    ctx = vctx(tmp_path, 32)
    every = decode_frames(VIDEO.materialise(clips["mp4"], {"max_length": FRAMES}, ctx).array)
    assert every.shape[0] == FRAMES
    for stored, frame in zip(every, pan):
        assert error(stored, squashed(frame, 32)) < CLOSE
    middle = decode_frames(VIDEO.materialise(clips["mp4"], {"max_length": 1}, ctx).array)
    np.testing.assert_array_equal(middle[0], every[5])
    more = VIDEO.materialise(clips["mp4"], {"max_length": 16}, ctx).array
    idx = sample_indices(FRAMES, 16)
    assert more.shape == (16, 32, 32, 3) and len(set(idx)) == FRAMES
    for k, i in enumerate(idx):  # repeated frames are the same frame
        np.testing.assert_array_equal(more[k], every[i])
    _, jpegs = unpack_frames(VIDEO.materialise(clips["mp4"], {"max_length": 16, **JPEG}, ctx).array)
    assert jpegs == [jpeg_bytes(f) for f in more]
    ok = VIDEO.materialise(clips["mp4"], {"min_length": FRAMES}, ctx)
    assert frame_layout(ok.array) == (DEFAULT_FRAMES, 32)


def _audio_only_webm() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libopus", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
        frame.sample_rate = 48000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make,attrs,reason",
    [
        (lambda c, d: None, {}, "missing video"),
        (lambda c, d: float("nan"), {}, "missing video"),
        (lambda c, d: b"", {}, "missing video"),
        (lambda c, d: {"bytes": None, "path": None}, {}, "missing video"),
        (lambda c, d: c["mp4"][: len(c["mp4"]) // 2], {}, "video could not be decoded (InvalidDataError)"),
        (lambda c, d: c["gif"][:20], {}, "video could not be decoded (InvalidDataError)"),
        (lambda c, d: np.random.default_rng(0).bytes(4000), {}, "video could not be decoded (InvalidDataError)"),
        (lambda c, d: _png(), {}, f"not a video container this reads ({CONTAINER_LIST})"),
        (lambda c, d: "no/such/clip.mp4", {}, "video file not found (no/such/clip.mp4)"),
        (lambda c, d: empty_mp4(10), {}, "video has no frames"),
        (lambda c, d: _audio_only_webm(), {}, "file has no video stream"),
        (lambda c, d: c["webm"], {"min_length": 11}, "video has 10 frames, fewer than min_length=11"),
        (lambda c, d: 12, {}, "unsupported video value (int)"),
    ],
    ids=["none", "nan", "empty-bytes", "empty-dict", "truncated-mp4", "truncated-gif", "random-bytes", "png",
         "no-file", "zero-frames", "audio-only", "min-length", "int"],
)
def test_bad_video_is_rejected_with_its_reason(make, attrs, reason, clips, tmp_path):
    with pytest.raises(RejectRow) as e:
        VIDEO.materialise(make(clips, tmp_path), attrs, vctx(tmp_path))
    assert e.value.reason == reason  # exact, deterministic text (rejects.jsonl is byte-identical)
    assert str(tmp_path) not in e.value.reason  # the path as written, not where it resolved


def test_a_playlist_that_would_open_other_files_is_refused(clips, tmp_path):
    """FFmpeg's HLS and concat demuxers open the files a playlist names: only plain containers may
    be opened, so a cell can't make materialisation read (or fetch) anything else."""
    import av

    (tmp_path / "seg.mp4").write_bytes(clips["mp4"])
    (tmp_path / "list.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\nseg.mp4\n#EXT-X-ENDLIST\n")
    (tmp_path / "list.ffconcat").write_text("ffconcat version 1.0\nfile seg.mp4\n")
    for name in ("list.m3u8", "list.ffconcat"):
        with av.open(str(tmp_path / name)) as plain:  # what an unrestricted open would do
            assert sum(1 for _ in plain.decode(video=0)) == FRAMES
        with pytest.raises(RejectRow) as e:
            VIDEO.materialise(name, {}, vctx(tmp_path))
        assert e.value.reason == f"not a video container this reads ({CONTAINER_LIST})"


# ----- the stored array and collation ------------------------------------------------------------

def test_pack_unpack_round_trip_and_malformed_arrays():
    jpegs = [b"\xff\xd8\xffabc", b"\xff\xd8\xffde", b"\xff\xd8\xfffghij"]
    array = pack_frames(jpegs, 24)
    assert array.dtype == np.uint8 and array.ndim == 1
    assert unpack_frames(array) == (24, jpegs) and frame_layout(array) == (3, 24)
    bad = [array[:-1], array.astype(np.int32), array[:6], np.concatenate([array, array[:1]]),
           pack_frames([], 24), array.reshape(1, -1)]
    for b in bad:
        with pytest.raises(ValueError, match="not a packed VIDEO array"):
            unpack_frames(b)


@pytest.fixture(scope="module")
def stored(clips) -> list[np.ndarray]:
    ctx = RowContext(vocab=None, image_size=32)
    return [VIDEO.materialise(clips[c], {}, ctx).array for c in ("mp4", "webm", "gif")]


@pytest.fixture(scope="module")
def stored_jpeg(clips) -> list[np.ndarray]:
    ctx = RowContext(vocab=None, image_size=32)
    return [VIDEO.materialise(clips[c], JPEG, ctx).array for c in ("mp4", "webm", "gif")]


@pytest.mark.parametrize("layout", ["pixels", "jpeg"])
def test_collate_gives_uint8_channel_first_frames_without_a_mask(layout, stored, stored_jpeg):
    arrays, attrs = (stored, {}) if layout == "pixels" else (stored_jpeg, JPEG)
    out, mask = VIDEO.collate(arrays, attrs, None)
    assert out.shape == (3, DEFAULT_FRAMES, 3, 32, 32) and out.dtype == np.uint8 and mask is None
    assert out.flags.c_contiguous
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(out[i], decode_frames(a).transpose(0, 3, 1, 2))
    train, _ = VIDEO.collate(arrays, attrs, [np.random.default_rng(s) for s in range(3)])
    np.testing.assert_array_equal(train, out)  # nothing random per epoch


def test_collate_refuses_frames_stored_other_than_the_slot_says(stored, stored_jpeg):
    with pytest.raises(ValueError, match="stored as JPEG frames but the slot has no jpeg_frames; re-run materialisation"):
        VIDEO.collate(stored_jpeg, {}, None)
    with pytest.raises(ValueError, match="stored as pixel frames but the slot has jpeg_frames; re-run materialisation"):
        VIDEO.collate(stored, JPEG, None)


def test_collate_refuses_a_batch_of_different_layouts(clips, stored):
    other = VIDEO.materialise(clips["mp4"], {"max_length": 2}, RowContext(vocab=None, image_size=32)).array
    with pytest.raises(ValueError, match=r"differ in \(frames, side\): \[\(2, 32\), \(4, 32\)\]"):
        VIDEO.collate([stored[0], other], {}, None)


# ----- the adaptor -------------------------------------------------------------------------------

@pytest.mark.parametrize("stem,sizes", [("conv", [8, 17, 32]), ("patch", [16, 33]), ("resnet50", [16, 33])])
def test_encoder_positions_are_what_the_adaptor_produces(stem, sizes):
    import torch

    from ofasys.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(d_model=32, heads=4, adaptors={"VIDEO": {"stem": stem, "stem_channels": 16,
                                                                  "positions": "sinusoidal"}})
    adaptor = VIDEO.build_adaptor(config).eval()
    for size in sizes:
        for frames in (1, 3):
            with torch.no_grad():
                tokens, mask = adaptor(torch.randint(0, 256, (2, frames, 3, size, size), dtype=torch.uint8))
            for array in (pack_frames([b"x"] * frames, size), np.zeros((frames, size, size, 3), np.uint8)):
                counted = VIDEO.encoder_positions(array, {}, config)
                assert tokens.shape[:2] == (2, counted) and mask.shape == (2, counted) and mask.all(), (stem, size)
    assert VIDEO.encoder_positions(pack_frames([b"x"] * 4, 64), {}, ModelConfig(adaptors={"VIDEO": {}})) == 4 * 64


def _adaptor(**settings):
    import torch

    from ofasys.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(d_model=32, heads=4, adaptors={"VIDEO": {"stem_channels": 16, **settings}})
    return VIDEO.build_adaptor(config).eval()


def test_frames_are_embedded_in_order_with_their_own_frame_positions(stored):
    import torch

    adaptor = _adaptor(max_grid=8)
    clips = torch.from_numpy(VIDEO.collate(stored, {}, None)[0])
    with torch.no_grad():
        x, mask = adaptor(clips)
        assert x.shape == (3, 4 * 16, 32) and mask.all()
        # frame k's grid is block k of the sequence: a clip of frame k alone gives the same tokens
        # minus the frame positions
        per_frame = x.reshape(3, 4, 16, 32)
        for k in range(4):
            alone, _ = adaptor(clips[:, k : k + 1])
            time = adaptor.frame_pos.weight
            torch.testing.assert_close(per_frame[:, k] - time[k], alone[:, 0:16].reshape(3, 16, 32) - time[0])
        # reversed frames are not the same tokens reversed: the model sees the order
        backwards, _ = adaptor(clips.flip(1))
        assert not torch.allclose(backwards.reshape(3, 4, 16, 32).flip(1), per_frame, atol=1e-4)
        # a frame mask covers that frame's whole grid
        frame_mask = torch.tensor([[True, True, True, False]] * 3)
        _, expanded = adaptor(clips, frame_mask)
        assert expanded.shape == (3, 64) and expanded[:, :48].all() and not expanded[:, 48:].any()


def test_learned_frame_positions_cover_max_frames_and_sinusoidal_any_count():
    import torch

    with torch.no_grad():
        learned = _adaptor(max_frames=2)
        assert learned(torch.rand(1, 2, 3, 16, 16))[0].shape == (1, 2 * 4, 32)
        with pytest.raises(ValueError, match="3 frames exceeds max_frames=2; raise model.adaptors.VIDEO.max_frames"):
            learned(torch.rand(1, 3, 3, 16, 16))
        with pytest.raises(ValueError, match="exceeds max_grid=1; raise model.adaptors.VIDEO.max_grid"):
            _adaptor(max_grid=1)(torch.rand(1, 1, 3, 16, 16))
        fixed = _adaptor(max_frames=2, positions="sinusoidal")
        assert fixed(torch.rand(1, 20, 3, 16, 16))[0].shape == (1, 20 * 4, 32)


def test_the_model_gives_video_its_own_adaptor_and_leaves_image_weights_alone():
    import torch

    from ofasys.model.config import ModelConfig
    from ofasys.model.universal import UniversalModel

    both = UniversalModel(ModelConfig(adaptors={"IMAGE": {}, "VIDEO": {}}), seed=3)
    image_only = UniversalModel(ModelConfig(adaptors={"IMAGE": {}}), seed=3)
    video = dict(both.adaptors["VIDEO"].named_parameters())
    assert "frame_pos.weight" in video and video["frame_pos.weight"].shape == (16, 128)
    image_ptrs = {p.data_ptr() for p in both.adaptors["IMAGE"].parameters()}
    assert not image_ptrs & {p.data_ptr() for p in video.values()}  # nothing shared with IMAGE
    for name, value in image_only.state_dict().items():
        assert torch.equal(both.state_dict()[name], value), name  # adding VIDEO changed no weight


def test_adaptor_settings_are_checked_by_name():
    from ofasys.model.config import ModelConfig

    with pytest.raises(ValueError, match="adaptors.VIDEO: max_frames must be positive, got 0"):
        ModelConfig(adaptors={"VIDEO": {"max_frames": 0}})
    with pytest.raises(ValueError, match="VIDEO: VideoAdaptorConfig.max_frame: unknown key; did you mean 'max_frames'"):
        ModelConfig(adaptors={"VIDEO": {"max_frame": 4}})
    assert ModelConfig(adaptors={"VIDEO": {"stem": "patch", "max_frames": 8}}).adaptor("VIDEO").max_frames == 8


# ----- the instruction language ------------------------------------------------------------------

def test_video_slots_parse_and_plan_with_ofasys_names():
    from ofasys.data.members import plan_members
    from ofasys.instruction import parse_instruction

    assert VIDEO.status is None and VIDEO.preprocess == {"default": None, "video": None}
    assert VIDEO.adaptors == {"default": None, "video_image_sequence": None}
    ins = parse_instruction("[VIDEO:clip,max_length=8,min_length=2,preprocess=video,adaptor=video_image_sequence] "
                            "<BOS> what does the video show? <EOS> -> <BOS> [TEXT:cap] <EOS>")
    [member] = [m for m in plan_members(ins) if m.modality == "VIDEO"]
    assert (member.name, member.attrs, member.sides) == ("clip.video", {"max_length": 8, "min_length": 2},
                                                         frozenset({"input"}))
    flagged = parse_instruction("[VIDEO:clip,jpeg_frames] <BOS> what does the video show? <EOS> -> <BOS> [TEXT:cap] <EOS>")
    [member] = [m for m in plan_members(flagged) if m.modality == "VIDEO"]
    assert member.attrs == {"jpeg_frames": True}  # it changes the stored array: part of the member


# ----- shards of the earlier layout ----------------------------------------------------------------

def _manifest(tmp_path, slot: dict) -> "Path":
    """A manifest whose only slot is `slot` (what `read_manifest` checks before any shard)."""
    import json

    from ofasys.data.manifest import REQUIRED_KEYS

    entry = {"column": "clip", "modality": "VIDEO", "member": "clip.video.npy", "dtype": "uint8", "side": "input",
             **slot}
    manifest = {k: {} for k in REQUIRED_KEYS} | {"format": 2, "task": "v", "instruction": "", "params_hash": "",
                                                  "image_size": 48, "slots": [entry]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_shards_of_the_earlier_jpeg_layout_are_refused_in_one_line(tmp_path):
    from ofasys.data.manifest import ManifestError, read_manifest

    with pytest.raises(ManifestError) as e:  # what materialisation wrote before pixel frames
        read_manifest(_manifest(tmp_path, {"shape": [None], "attrs": {}}))
    message = str(e.value)
    assert "\n" not in message and "column 'clip'" in message and "store JPEG frames" in message
    assert message.endswith("re-run materialisation (`dvc repro`, or `materialise_task`) to rewrite the shards")
    read_manifest(_manifest(tmp_path, {"shape": [None, 48, 48, 3], "attrs": {}}))
    read_manifest(_manifest(tmp_path, {"shape": [None], "attrs": JPEG}))  # the opt-in JPEG layout
    with pytest.raises(ManifestError, match="store uint8 pixel frames of 48 px, this version stores JPEG frames"):
        read_manifest(_manifest(tmp_path, {"shape": [None, 48, 48, 3], "attrs": JPEG}))


def test_a_clip_too_long_for_the_model_is_rejected_with_the_video_fix(vocab, clips, tmp_path):
    from ofasys.data.limits import PositionCheck
    from ofasys.data.rows import RowRejected
    from ofasys.instruction import parse_instruction
    from ofasys.model.config import ModelConfig

    ins = parse_instruction("[VIDEO:clip,max_length=8] <BOS> what does the image describe? <EOS> -> <BOS> [TEXT:cap] <EOS>")
    arrays = {"clip.video": VIDEO.materialise(clips["gif"], {"max_length": 8}, vctx(tmp_path, 32)).array,
              "cap.text": np.asarray(vocab.encode_text("two three"), np.int32)}
    prompt = 2 + len(vocab.encode_text("what does the image describe?"))
    fits = ModelConfig(max_positions=8 * 16 + prompt, adaptors={"VIDEO": {}})
    assert PositionCheck(ins, vocab, fits)(arrays)[0].encoder == 8 * 16 + prompt
    with pytest.raises(RowRejected) as e:
        PositionCheck(ins, vocab, ModelConfig(max_positions=100, adaptors={"VIDEO": {}}))(arrays)
    assert (e.value.column, e.value.reason) == ("clip", (
        f"encoder side is {8 * 16 + prompt} tokens, model.max_positions is 100; raise model.max_positions or "
        "lower max_length= (frames) of the VIDEO slot or the task's image_size"))
