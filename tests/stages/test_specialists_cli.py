import pytest

from pipeline.params import ParamsError
from stages.specialists import set_aside_checkpoints, selected_tasks

NAMES = ["caption", "vqa", "asr"]


def test_tasks_default_to_all_and_keep_the_order_given():
    assert selected_tasks(None, NAMES) == NAMES
    assert selected_tasks(" asr, caption ,", NAMES) == ["asr", "caption"]


@pytest.mark.parametrize("arg, message", [
    ("capton", r"^--tasks: 'capton' is not a task; tasks: caption, vqa, asr$"),
    ("", r"^--tasks: names no task; give some of caption, vqa, asr, or leave --tasks out"),
    (" , ", r"^--tasks: names no task"),
])
def test_a_task_list_that_names_no_known_task_is_refused(arg, message):
    with pytest.raises(ParamsError, match=message):
        selected_tasks(arg, NAMES)


def test_force_sets_the_finished_checkpoints_aside_so_training_starts_from_scratch(tmp_path):
    work = tmp_path / "caption"
    (work / "checkpoints" / "ds").mkdir(parents=True)
    (work / "checkpoints" / "ds" / "latest").write_text("step1")
    set_aside_checkpoints(work)
    assert not (work / "checkpoints").exists()
    assert (work / "checkpoints.previous" / "ds" / "latest").read_text() == "step1"
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "run.json").write_text("{}")
    set_aside_checkpoints(work)  # the newer set replaces the one set aside before
    assert sorted(p.name for p in (work / "checkpoints.previous").iterdir()) == ["run.json"]
    set_aside_checkpoints(work)  # nothing to set aside: a no-op
    assert (work / "checkpoints.previous" / "run.json").is_file()
