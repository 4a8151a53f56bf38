"""Move the `champion` alias by hand: `python -m stages.promote --version N [--force] [--dry-run]`.

The evaluate stage promotes only by the rule of `pipeline.selection`, which refuses to compare versions
evaluated on different tasks or test data. When the task set or the data changed on purpose, a person
starts the new line here. It prints the rule's comparison with the current champion first, and
refuses a version that does not beat every baseline or has degenerate output unless `--force`.
"""

from __future__ import annotations

import logging

from stages import cli

log = logging.getLogger("promote")


def main(args, params) -> None:
    from pipeline import selection, tracking
    from pipeline.selection import PromotionRefused

    tracking.setup(params.tracking)
    model, version = params.tracking.registered_model, str(args.version)
    try:
        text = tracking.evaluation_of(model, version)
    except Exception as err:  # noqa: BLE001 - MLflow's not-found, shown as the user's error
        raise FileNotFoundError(f"--version {version}: model {model!r} has no such version in {params.tracking.uri} "
                                f"({type(err).__name__})") from None
    if text is None:
        raise PromotionRefused(f"--version {version}: it was never evaluated (run the evaluate stage on it first)")
    current, current_text = tracking.champion(model)
    if current == version:
        log.info("version %s already is the champion", version)
        return
    candidate = selection.decode(text)
    decision = selection.decide(candidate, selection.decode(current_text) if current_text else None,
                                params.evaluate.tolerance, champion_label=f"champion version {current}")
    for line in decision.reasons:
        log.info("rule: %s", line)
    baseline_check = selection.decide(candidate, None)
    if not baseline_check.promote and not args.force:
        raise PromotionRefused(f"--version {version}: {baseline_check.summary()}; pass --force to promote it anyway")
    if args.dry_run:
        log.info("dry run: the champion stays version %s", current)
        return
    tracking.set_champion(model, version)
    tracking.record_promotion(model, version, f"promoted by hand (was version {current}); rule: {decision.summary()}")
    log.info("champion: version %s (was %s)", version, current)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--version", required=True, type=int, help="registered model version to make champion")
    p.add_argument("--force", action="store_true", help="promote even if a task misses its baseline")
    p.add_argument("--dry-run", action="store_true", help="print the comparison, move nothing")
    cli.run(main, p.parse_args())
