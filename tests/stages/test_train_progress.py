import logging

from stages.train import ProgressLog


def test_progress_reports_step_losses_and_time_left(caplog):
    progress = ProgressLog(max_steps=100, interval=0.0)
    with caplog.at_level(logging.INFO, logger="train"):
        progress(10, {"train/loss": 2.0, "train/loss/caption": 1.5})  # speed is measured from here
        progress(20, {"train/loss": 1.0, "train/loss/caption": 1.25, "train/loss/vqa": 0.25})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("step 20/100  caption=1.250 vqa=0.250") and "s left" in lines[0]
    assert "0.0 steps/s" not in lines[0]


def test_progress_is_throttled_but_always_reports_the_last_step(caplog):
    progress = ProgressLog(max_steps=30, interval=3600.0)
    with caplog.at_level(logging.INFO, logger="train"):
        for step in (10, 20, 30):
            progress(step, {"train/loss/caption": 1.0})
    assert [r.getMessage().split()[1] for r in caplog.records] == ["30/30"]
