"""The ``mcit-bench`` command line: parses, calls library functions, prints with rich. Nothing else
of the project imports it (an import-linter contract keeps it so).

``app.py`` holds the application; ``options.py`` the option sets ``run`` and ``tune`` share and the
flags methods declare; ``runs.py``, ``board.py`` and ``inspect.py`` the commands.
"""

from __future__ import annotations

from mcit_bench.cli.app import app, print_error
from mcit_bench.core.errors import storage_error

# each registers its commands, in the order --help lists them
# isort: off
from mcit_bench.cli import runs, board, inspect  # noqa: E402, F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    # A write the file system refuses deep inside a library (a checkpoint, the arrow cache) is the
    # user's to fix (a full disk, a read-only folder): one sentence, not a traceback.
    try:
        app()
    except OSError as error:
        refused = storage_error(error)
        if refused is None:
            raise
        print_error(refused)
        raise SystemExit(2) from None
