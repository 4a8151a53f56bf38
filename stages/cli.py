"""What every stage shares: logging, params loading, and turning known errors into exit codes.

A stage's first act is to validate the whole params.yaml (not just its slice), so a typo anywhere
stops the first stage before any work. A user error (bad params, a malformed instruction, a source
file that is missing or malformed, too many rejected rows, a full disk) exits with status 2 and one
clear message, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path
from typing import Callable

from pipeline.params import Params, ParamsError, load_params

ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
"""OS errors the user fixes (free space, permissions), not bugs: one line and exit 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Error types whose message is the whole story (imported lazily: stages stay fast to start)."""
    from ofasys.data.materialise import OutputWriteError, RejectBudgetExceeded
    from ofasys.instruction import InstructionError
    from ofasys.training.checkpoint_integrity import CheckpointIntegrityError
    from ofasys.vocab import VocabMismatchError
    from ofasys.vq_config import VQError
    from pipeline.selection import PromotionRefused
    from pipeline.sources import SourceError

    return (ParamsError, FileNotFoundError, SourceError, InstructionError, RejectBudgetExceeded,
            VocabMismatchError, OutputWriteError, CheckpointIntegrityError, PromotionRefused, VQError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    return p


def run(main: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Load and validate params, run the stage, map user errors to exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        params = load_params(args.params)
        main(args, params)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror}{where} (free space or fix permissions there, then re-run)", file=sys.stderr)
        sys.exit(2)
