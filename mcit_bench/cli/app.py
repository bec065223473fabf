"""The ``mcit-bench`` application, its consoles, and how a refusal is printed: one sentence, exit 2."""

from __future__ import annotations

import os

# Nothing at run time reaches the network unless the user asks (HF_HUB_OFFLINE=0): a model or data
# set is read from a folder or the local Hugging Face cache, and a missing one fails at once in one
# sentence instead of after minutes of retries. Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import sys  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from mcit_bench.core.errors import UserError, storage_error  # noqa: E402

console = Console(stderr=False)
errors = Console(stderr=True, soft_wrap=True)  # one sentence per error, never broken inside a path


try:  # typer 0.2x carries its own copy of click; earlier versions use click itself
    from typer._click import exceptions as click  # noqa: E402
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click  # type: ignore[no-redef]  # noqa: E402


class OneSentenceErrors(TyperGroup):
    """Every refusal told as one sentence and exit status 2: a refusal of mcit-bench's own (a UserError no
    command caught itself), a write the file system refuses deep inside a library (a full disk, a
    read-only folder: the user's to fix), and click's usage errors (an unknown command or option, a
    missing or unparsable value) instead of its boxed panel and usage lines."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as error:  # a bare group: its help, as click shows it
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "mcit-bench"
            say_error(f"{' '.join(error.format_message().split()).rstrip('.')}; see '{where} --help'")
            sys.exit(2)
        except typer.Abort:
            say_error("interrupted")
            sys.exit(130)
        except UserError as error:
            print_error(error)
            sys.exit(2)
        except OSError as error:
            refused = storage_error(error)
            if refused is None:
                raise  # not the user's to fix: main's last resort reports it as a bug
            print_error(refused)
            sys.exit(2)
        except click.ClickException as error:  # a file click itself could not open
            say_error(" ".join(error.format_message().split()))
            sys.exit(error.exit_code)
        sys.exit(returned if isinstance(returned, int) else 0)  # typer.Exit(code) comes back as its code


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=OneSentenceErrors,
                  help="Benchmark multimodal continual instruction tuning: run methods on task streams, score them.")


def fail(error: UserError) -> NoReturn:
    print_error(error)
    raise typer.Exit(code=2)


def print_error(error: UserError) -> None:
    say_error(str(error))


def say_error(message: str) -> None:
    # the message is plain text: brackets in it ("[a-z0-9]", "[ci]") are not rich markup
    errors.print("error:", style="bold red", end=" ")
    errors.print(message, highlight=False, markup=False)
