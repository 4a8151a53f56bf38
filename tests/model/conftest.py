"""Tiny-tensor tests run on one torch thread (see tests/support/threads.py)."""

from tests.support.threads import one_torch_thread  # noqa: F401
