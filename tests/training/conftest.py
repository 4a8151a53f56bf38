"""Training tests sign checkpoints with a fixed test key (OFASYS_CHECKPOINT_KEY), so they neither
create nor depend on the machine's key file; subprocesses they start inherit it."""

import pytest

from ofasys.training.checkpoint_integrity import KEY_ENV

TEST_KEY = "ofasys-test-checkpoint-key-0123456789abcdef"


@pytest.fixture(scope="session", autouse=True)
def checkpoint_test_key():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, TEST_KEY)
        yield TEST_KEY
