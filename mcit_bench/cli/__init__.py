"""The ``mcit-bench`` command line: parses, calls library functions, prints with rich. Nothing else
of the project imports it (an import-linter contract keeps it so).

``app.py`` holds the application; ``options.py`` the option sets ``run`` and ``tune`` share and the
flags methods declare; ``runs.py``, ``board.py`` and ``inspect.py`` the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from mcit_bench.cli.app import app, errors

# each registers its commands, in the order --help lists them
# isort: off
from mcit_bench.cli import runs, board, inspect  # noqa: E402, F401
# isort: on

__all__ = ["app", "main", "release_processes"]


BUG_EXIT = 70  # EX_SOFTWARE: mcit-bench's own fault, not the input's


def main() -> None:
    try:
        app()  # refusals end here in one sentence and exit 2 (app.OneSentenceErrors)
    except Exception as error:  # the last resort: every input error is a refusal before it gets here
        report_bug(error)
    finally:
        release_processes()


def release_processes() -> None:
    """End the process group a launched run (torchrun, accelerate launch) started. Left to the
    interpreter's exit, gloo's threads can abort a process whose run has finished ("terminate called
    without an active exception"), which fails the launch. torch is looked up, never imported: the
    board's commands start without it."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def report_bug(error: BaseException) -> NoReturn:
    """A failure no input check caught is a bug of mcit-bench: one sentence naming where the
    traceback was saved (printed too with MCIT_BENCH_DEBUG=1), and exit status 70."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(error))
    folder = Path(os.environ.get("MCIT_BENCH_CACHE", Path(tempfile.gettempdir()) / "mcit-bench")) / "tracebacks"
    saved = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(text, encoding="utf-8")
        where = f"its traceback is saved in {saved}"
    except OSError:
        where = "its traceback could not be saved; rerun with MCIT_BENCH_DEBUG=1 to print it"
    if os.environ.get("MCIT_BENCH_DEBUG") == "1":
        errors.print(text, highlight=False, markup=False)
    errors.print("bug:", style="bold red", end=" ")
    errors.print(f"mcit-bench failed on something no check caught ({type(error).__name__}); {where}; please "
                 f"report it with the command you ran", highlight=False, markup=False)
    raise SystemExit(BUG_EXIT) from None
