"""The ``mcit-bench`` application, its consoles, and how a refusal is printed: one sentence, exit 2."""

from __future__ import annotations

import os

# Nothing at run time reaches the network unless the user asks (HF_HUB_OFFLINE=0): a model or data
# set is read from a folder or the local Hugging Face cache, and a missing one fails at once in one
# sentence instead of after minutes of retries. Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from typing import NoReturn  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from mcit_bench.core.errors import UserError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal continual instruction tuning: run methods on task streams, score them.")
console = Console(stderr=False)
errors = Console(stderr=True, soft_wrap=True)  # one sentence per error, never broken inside a path


def fail(error: UserError) -> NoReturn:
    print_error(error)
    raise typer.Exit(code=2)


def print_error(error: UserError) -> None:
    # the message is plain text: brackets in it ("[a-z0-9]", "[ci]") are not rich markup
    errors.print("error:", style="bold red", end=" ")
    errors.print(str(error), highlight=False, markup=False)
