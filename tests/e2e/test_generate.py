"""End to end, images as VQ codes: `dvc repro` trains the VQ tokenizer in its own stage, materialises
codes with its fingerprint, exports it beside the weights, evaluates code accuracy and pixel error
beside their baselines with the VQ's own reconstruction error, writes generated images as PNG, and
the Python API returns them as PIL images. Adding a task without images retrains nothing; a local VQ
file can replace the trained one."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.e2e.test_pipeline import ROOT, _fresh_repro, _run

pytestmark = pytest.mark.slow

T2I = '<BOS> what does " [TEXT:cap] " look like? <EOS> -> <BOS> [IMAGE:img,preprocess=image_vqgan,adaptor=image_vqgan] <EOS>'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("images")
    return _fresh_repro(work, ROOT / "tests/e2e/params_generate.yaml")


def test_the_vq_stage_reports_its_codes_against_the_mean_image(run):
    work, _, _ = run
    report = json.loads((work / "assets/vq/report.json").read_text())
    assert report["enabled"] and report["tasks"] == ["image_infill", "text_to_image"]
    assert report["train_images"] == 63 + 64  # the corrupt row's image is skipped
    assert report["valid_images"] == 16 and report["reconstruction_error"] > 0 and report["mean_image_error"] > 0
    manifest = json.loads((work / "data/shards/text_to_image/manifest.json").read_text())
    assert manifest["assets"]["image_codes"]["fingerprint"] == report["fingerprint"]
    assert manifest["assets"]["image_codes"]["grid"] == 4
    assert (work / "checkpoints/final/vq.safetensors").read_bytes() == (work / "assets/vq/vq.safetensors").read_bytes()
    assert json.loads((work / "checkpoints/final/config.json").read_text())["image_codes"] == report["fingerprint"]


def test_image_metrics_sit_beside_their_baselines_and_the_vqs_own_error(run):
    work, _, _ = run
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    for task in ("text_to_image", "image_infill"):
        entry = metrics[task]
        assert entry["metric"] == "code_accuracy" and 0 <= entry["code_accuracy"] <= 1
        assert {"code_accuracy_baseline", "pixel_error", "pixel_error_baseline", "vq_reconstruction_error",
                "vq_reconstruction_error_baseline"} <= set(entry)
        assert entry["num_samples"] == 8


def test_batch_inference_writes_each_generated_image_as_png(run):
    work, _, _ = run
    rows = pq.read_table(work / "predictions/text_to_image.parquet").to_pylist()
    assert len(rows) == 8 and all(len(r["prediction"]) == 16 for r in rows)
    for r in rows:
        with Image.open(work / r["image"]) as img:
            assert img.size == (16, 16) and img.mode == "RGB"
        assert 0 <= r["score"] <= 1


def test_the_python_api_returns_a_pil_image(run):
    from ofasys.inference import OFASys

    work, _, _ = run
    model = OFASys.from_pretrained(work / "checkpoints/final")
    pred = model.inference(T2I, data={"cap": "a handwritten three on the coffee photo"})
    assert isinstance(pred.image, Image.Image) and pred.image.size == (16, 16)
    assert len(pred.outputs["img"]) == 16


def test_adding_a_task_without_images_retrains_no_vq_and_a_local_vq_file_replaces_it(run):
    work, env, _ = run
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tasks"]["caption_too"] = dict(params["tasks"]["caption"])
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["dvc", "repro", "resolve"], work, env)
    status = _run(["dvc", "status"], work, env).stdout
    assert "vq_images@caption_too" in status and "\nvq:" not in status and "vq_images@text_to_image" not in status
    own = work / "my_vq.safetensors"
    shutil.copy(work / "assets/vq/vq.safetensors", own)
    params["assets"]["vq"] = {"path": str(own)}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["dvc", "repro", "vq"], work, env)
    report = json.loads((work / "assets/vq/report.json").read_text())
    assert report["path"] == str(own) and report["reconstruction_error"] > 0


DETECT = ("[IMAGE:img] <BOS> what are the objects in the image? <EOS> -> <BOS> ( [BOX:boxes] [TEXT:labels,closed_set] )* "
          "<EOS>")


def test_detection_materialises_lists_rejects_unequal_ones_and_scores_map(run):
    work, _, _ = run
    rejects = [json.loads(line) for line in (work / "data/shards/detection/rejects.jsonl").read_text().splitlines()]
    reasons = {r["reason"] for r in rejects}
    assert any("different numbers of elements" in reason for reason in reasons) and len(rejects) == 2
    manifest = json.loads((work / "data/shards/detection/manifest.json").read_text())
    assert manifest["max_repeats"] == 3 and manifest["closed_sets"]["labels"]
    entry = json.loads((work / "metrics/metrics.json").read_text())["detection"]
    assert entry["metric"] == "map50" and {"map50_baseline", "map", "map_baseline"} <= set(entry)
    rows = pq.read_table(work / "predictions/detection.parquet").to_pylist()
    assert len(rows) == 8 and all(isinstance(r["prediction"], list) for r in rows)
    assert all(isinstance(o["boxes"], list) and isinstance(o["labels"], str) for r in rows for o in r["reference"])


def test_the_python_api_returns_typed_objects(run):
    import numpy as np

    from ofasys.inference import OFASys

    work, _, _ = run
    model = OFASys.from_pretrained(work / "checkpoints/final")
    pred = model.inference(DETECT, data={"img": np.zeros((40, 60, 3), np.uint8)})
    assert isinstance(pred.objects, list)
    for obj in pred.objects:  # whatever the untrained model emits is typed: a box in the 60 x 40 image, a label
        assert len(obj.box) == 4 and 0 <= obj.box[2] <= 60 and 0 <= obj.box[3] <= 40
        assert obj.label in manifest_labels(work) and 0 < obj.score <= 1


def manifest_labels(work) -> list[str]:
    return json.loads((work / "data/shards/detection/manifest.json").read_text())["closed_sets"]["labels"]
