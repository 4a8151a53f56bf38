import pytest

from pipeline.params import ParamsError
from stages.specialists import selected_tasks

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
