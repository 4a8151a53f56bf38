"""Stage `evaluate`: per-task metric beside its trivial baseline -> metrics/metrics.json and MLflow.

Each task's entry holds its metric and that metric's trivial baseline, the companion metrics with
theirs, the gain and whether the output is degenerate (`ofasys.metrics.registry.report`). The
`champion` registry alias then moves to the new version only by the rule of `pipeline.selection`
(same tasks and test data as the champion, no task regressing, one improving, every task above its
baseline); the log says why it moved or not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from stages import cli

log = logging.getLogger("evaluate")

OUT = Path("metrics")
PLOTS = Path("plots")


def masked_inputs(task_data, indices) -> list[str]:
    """The infilling input as the model sees it at evaluation (masked spans shown as `<mask>`)."""
    collator = task_data.collator
    template = task_data.instruction.templates[0]
    slot = next(s for side, s in template.slots() if side == "input" and s.attrs.get("mask_ratio"))
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for i in indices:
        ids = collator._slot_tokens(task_data.get(i), slot, rng, False, "input")
        words, piece = [], []
        for t in list(ids) + [None]:
            if t is None or t == task_data.vocab.mask:
                if piece:
                    words.append(task_data.vocab.decode_text(piece))
                    piece = []
                if t is not None:
                    words.append("<mask>")
            else:
                piece.append(int(t))
        out.append(" ".join(w for w in words if w))
    return out


def decoded_pictures(output, reference, image_decoder) -> dict:
    """An image output's generated and reference codes decoded to pictures (a grid cut short is left
    out); empty without a decoder or for other outputs."""
    import numpy as np

    pictures = {}
    if image_decoder is None or not isinstance(reference, list):
        return pictures
    side = int(round(len(reference) ** 0.5))
    for which, codes in (("prediction", output), ("reference", reference)):
        if isinstance(codes, list) and len(codes) == side * side:
            pictures[which] = image_decoder(np.asarray(codes, dtype=np.int64).reshape(1, side, side))[0]
    return pictures


def spoken(prediction, reference) -> dict:
    """A speech output's generated WAV (the file the stage wrote) and its reference's log-mel frames
    through the same vocoder (so a listener hears what the vocoder alone loses) as WAV bytes; empty for
    other outputs."""
    import io

    import numpy as np

    if not (isinstance(prediction, str) and prediction.endswith(".wav") and isinstance(reference, np.ndarray)):
        return {}
    import soundfile as sf

    from ofasys.modalities.speech_synthesis import waveform_from_fbank

    buf = io.BytesIO()
    sf.write(buf, waveform_from_fbank(reference), 16000, format="WAV", subtype="PCM_16")
    return {"prediction": Path(prediction).read_bytes(), "reference": buf.getvalue()}


def write_gallery(name, metric, test, preds, column, scores, image_decoder=None, references=None) -> Path:
    """metrics/gallery/<task>.html: the first test samples with their picture, inputs, prediction,
    reference and score (`pipeline.gallery`); image outputs are shown decoded by `image_decoder`,
    speech as players (`references`: a frame output's reference arrays)."""
    from ofasys.metrics import registry
    from pipeline.gallery import GALLERY_SAMPLES, Example, gallery_html, picture_of

    examples = []
    for i, pred in enumerate(preds[:GALLERY_SAMPLES]):
        sample = test.get(i)
        found = picture_of(sample.arrays)
        size = None
        if found is not None:
            info = sample.meta.get("meta", {}).get(found[0], {})
            size = (info["width"], info["height"]) if "width" in info and "height" in info else None
        output, reference = pred.outputs.get(column), pred.refs.get(column)
        perfect = registry.metric(metric).perfect
        right = (perfect is not None and scores[i] == perfect) or (references is None and output == reference)
        sounds = spoken(output, references[i]) if references is not None else {}
        examples.append(Example(pred.key, pred.row_id, pred.inputs, output, reference, scores[i], right,
                                None if found is None else found[1], size,
                                output_pictures=decoded_pictures(output, reference, image_decoder),
                                output_sounds=sounds))
    out = OUT / "gallery" / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(gallery_html(name, metric, examples), encoding="utf-8")
    tmp.replace(out)
    return out


VQ_REPORT = Path("assets/vq/report.json")


def vq_figures() -> dict:
    """The VQ tokenizer's own reconstruction error on valid images beside the mean image's (what the
    codes lose before a model generates any): reported with every task whose output is an image."""
    report = json.loads(VQ_REPORT.read_text()) if VQ_REPORT.is_file() else {}
    if "reconstruction_error" not in report:
        return {}
    return {"vq_reconstruction_error": report["reconstruction_error"],
            "vq_reconstruction_error_baseline": report["mean_image_error"]}


def transcriber_task(params) -> str | None:
    """The task whose speech recognition scores generated speech (`tts_wer`): the first with an AUDIO
    input and the `wer` metric (params load checks there is one when a task needs it)."""
    from pipeline.params_checks import speech_recognition_tasks

    found = speech_recognition_tasks(params)
    return found[0] if found else None


def frame_figures(metric: str, outputs, data, transcribe) -> dict:
    """What is reported beside a frame output's metric: a motion's mean distance to the test clips of
    its own label and of the others; for speech, the recogniser's WER on the reference speech itself
    (the best generated speech can score)."""
    from ofasys.metrics import error_rates, motion

    if metric == "motion_match":
        return motion.label_distances(list(outputs), list(data.references), list(data.input_texts))
    if metric == "tts_wer" and transcribe is not None:
        return {"tts_wer_reference": error_rates.wer(transcribe(list(data.references)), list(data.input_texts))}
    return {}


def evaluate_task(name, task, model, vocab, params, work: Path, image_decoder=None, transcribe=None) -> dict:
    from tqdm import tqdm

    from ofasys.batch_inference import (BatchInferenceConfig, add_column, load_frames, predict_to_parquet,
                                        save_frame_outputs)
    from ofasys.data.task_data import ShardTaskData
    from ofasys.evaluation import input_texts, is_frame_output, primary_output, references, sample_databases
    from ofasys.metrics import registry

    manifest = Path("data/shards") / name / "manifest.json"
    test = ShardTaskData(manifest, params.evaluate.split, vocab)
    train = ShardTaskData(manifest, "train", vocab)
    column = primary_output(test)
    cfg = BatchInferenceConfig(beam_size=params.evaluate.beam_size, batch_size=params.evaluate.batch_size,
                               max_samples=params.evaluate.max_samples)
    total = len(test) if not cfg.max_samples else min(len(test), cfg.max_samples)
    table = OUT / "predictions" / f"{name}.parquet"
    with tqdm(total=total, desc=f"evaluate {name}", unit="sample") as bar:
        _, preds = predict_to_parquet(model, test, table, work, cfg, progress=bar.update)
    needs = registry.needs(task.metric)
    frames = is_frame_output(test, column)
    data = registry.EvalData(
        references=references(test, column, len(preds)) if frames else [p.refs.get(column) for p in preds],
        train_references=references(train, column, len(train)),
        masked_inputs=masked_inputs(test, range(len(preds))) if "masked_inputs" in needs else None,
        databases=sample_databases(test, len(preds)) if "databases" in needs else None,
        image_decoder=image_decoder if "image_decoder" in needs else None,
        input_texts=input_texts(test, len(preds)) if "input_texts" in needs else None,
        transcribe=transcribe if "transcribe" in needs else None,
    )
    saved = [p.outputs.get(column) for p in preds]
    outputs = [load_frames(v) for v in saved] if frames else saved
    entry = {"column": column, **registry.report(task.metric, outputs, data)}
    if "image" in registry.metric(task.metric).outputs:
        entry.update(vq_figures())  # what the codes lose before any model generates them
    if frames:
        entry.update(frame_figures(task.metric, outputs, data, transcribe))
        field = registry.metric(task.metric).outputs[0]  # "motion" or "audio": the files a user opens
        files = save_frame_outputs(test, column, saved, [p.key for p in preds], OUT / "predictions" / name)
        add_column(table, field, files)
        preds = [dataclasses.replace(p, outputs={**p.outputs, column: f}) for p, f in zip(preds, files)]
    scores = registry.sample_scores(task.metric, outputs, data)
    add_column(table, "score", scores)
    image_output = "image" in registry.metric(task.metric).outputs
    write_gallery(name, task.metric, test, preds, column, scores, image_decoder if image_output else None,
                  data.references if frames else None)
    log.info("%s: %s %.3f (baseline %.3f, %s is better) on %d samples%s", name, task.metric, entry[task.metric],
             entry[f"{task.metric}_baseline"], "higher" if entry["higher_is_better"] else "lower",
             entry["num_samples"], "; DEGENERATE: one output for most inputs" if entry["degenerate"] else "")
    return entry


def task_fingerprint(name: str, metric: str, params) -> str:
    """What makes two evaluations of a task comparable (`pipeline.selection.evaluation_fingerprint`)."""
    from pipeline.selection import evaluation_fingerprint

    manifest = json.loads((Path("data/shards") / name / "manifest.json").read_text())
    shards = [s["sha256"] for s in manifest["splits"][params.evaluate.split]["shards"]]
    settings = {k: getattr(params.evaluate, k) for k in ("split", "beam_size", "max_samples")}
    return evaluation_fingerprint(shards, metric, settings)


def summary(results: dict) -> dict:
    """Counts over tasks, for the metrics file's top level (readable in `dvc exp show`)."""
    return {"tasks": len(results), "beat_baseline": sum(r["gain"] > 0 for r in results.values()),
            "degenerate": sum(bool(r["degenerate"]) for r in results.values())}


def main(args, params) -> None:
    import mlflow

    from ofasys.inference import OFASys
    from ofasys.metrics import bleu_signature, registry
    from pipeline import selection, tracking
    from pipeline.plots import metrics_png

    record = json.loads(Path("checkpoints/run.json").read_text())
    pretrained = OFASys.from_pretrained("checkpoints/final")
    work = Path(".cache/evaluate")
    decoder = None if pretrained.image_codes is None else pretrained.image_codes.decode
    transcribe = None
    if any("transcribe" in registry.needs(task.metric) for task in params.tasks.values()):
        from ofasys.data.task_data import ShardTaskData
        from ofasys.evaluation import transcriber

        asr = ShardTaskData(Path("data/shards") / transcriber_task(params) / "manifest.json",
                            params.evaluate.split, pretrained.vocab)
        transcribe = transcriber(pretrained.model, asr, params.evaluate.batch_size)
    results = {name: evaluate_task(name, task, pretrained.model, pretrained.vocab, params, work, decoder, transcribe)
               for name, task in params.tasks.items()}
    OUT.mkdir(exist_ok=True)
    tmp = OUT / "metrics.json.tmp"
    tmp.write_text(json.dumps({**results, "summary": summary(results)}, indent=2, sort_keys=True) + "\n")
    tmp.replace(OUT / "metrics.json")
    metrics_png(results, PLOTS / "metrics.png")

    evaluations = {name: selection.TaskEvaluation.from_report(r, task_fingerprint(name, r["metric"], params))
                   for name, r in results.items()}
    model, version = params.tracking.registered_model, record["version"]
    tracking.setup(params.tracking)
    with mlflow.start_run(run_id=record["run_id"]):
        for name, r in results.items():
            mlflow.log_metric(f"eval/{r['metric']}/{name}", r[r["metric"]])
            mlflow.log_metric(f"eval/baseline_{r['metric']}/{name}", r[f"{r['metric']}_baseline"])
        if any("bleu4" in r for r in results.values()):
            mlflow.set_tag("bleu_signature", bleu_signature())  # what makes a BLEU comparable with another
        mlflow.log_artifact(str(OUT / "metrics.json"))
        mlflow.log_artifact(str(PLOTS / "metrics.png"), "plots")
        mlflow.log_artifacts(str(OUT / "gallery"), "gallery")
    tracking.record_evaluation(model, version, selection.encode(evaluations))
    champion_version, champion_text = tracking.champion(model)
    if champion_version == version:
        log.info("champion: version %s already is the champion (evaluated again)", version)
        return
    champion = selection.decode(champion_text) if champion_text else None
    decision = selection.decide(evaluations, champion, params.evaluate.tolerance,
                                champion_label=f"champion version {champion_version}")
    if decision.promote:
        tracking.set_champion(model, version)
    tracking.record_promotion(model, version, decision.summary())
    for line in decision.reasons:
        log.info("champion: %s", line)
    log.info("champion: version %s %s", version,
             "is the new champion" if decision.promote else f"not promoted; champion stays version {champion_version}")


if __name__ == "__main__":
    cli.run(main, cli.parser(__doc__).parse_args())
