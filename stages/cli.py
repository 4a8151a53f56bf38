"""What every stage shares: logging, params loading, and turning known errors into exit codes.

A user error (bad params, a malformed instruction, too many rejected rows) exits with status 2 and
one clear message, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from pipeline.params import Params, ParamsError, load_params

USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, FileNotFoundError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Error types whose message is the whole story (imported lazily: stages stay fast to start)."""
    from ofasys.data.materialise import RejectBudgetExceeded
    from ofasys.instruction import InstructionError
    from ofasys.vocab import VocabMismatchError

    return USER_ERRORS + (InstructionError, RejectBudgetExceeded, VocabMismatchError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    return p


def run(main: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Load params, run the stage, map user errors to exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        params = load_params(args.params)
        main(args, params)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
