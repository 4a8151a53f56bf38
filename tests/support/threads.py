"""A fixture that pins torch to one thread for tests of tiny tensors."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny, so one thread is as fast as two, and it is immune to OpenMP
    oversubscription: on a busy 2-core machine two threads made the overfit test 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
