"""The `r1` command: registers each stage's typed function as a subcommand, nothing more."""

from __future__ import annotations

import errno
import os
import sys

import typer

from r1cli import __version__, config_files
from r1cli.commands import distill, filter, grpo, mix, plot, report, sample, sft, summary, toy
from r1cli.commands import eval as evaluate
from r1cli.console import console
from r1cli.console import error as print_error
from r1cli.errors import EXIT_USER_ERROR, UserError

try:  # typer vendors its own click from 0.2x on; older releases use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors

app = typer.Typer(
    name="r1",
    help="The DeepSeek-R1 training pipeline as stage commands that read and write checkpoints and JSONL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_debug = {"on": False}


def _version(value: bool) -> None:
    if value:
        print(f"r1 {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (also R1_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _debug["on"] = debug or os.environ.get("R1_DEBUG", "") not in ("", "0")


app.command("sft")(sft.sft)
app.command("grpo")(grpo.grpo)
app.command("sample")(sample.sample)
app.command("filter")(filter.filter_samples)
app.command("mix")(mix.mix)
app.command("distill")(distill.distill)
app.command("eval")(evaluate.evaluate)
app.command("plot")(plot.plot)
app.command("summary")(summary.summary)
app.command("report")(report.report)
app.add_typer(toy.app, name="toy")


def main() -> None:
    """Run the CLI: exit 0 on success; one `error:` line and exit 2 for bad input (a bad option
    included), a full disk or an unwritable path; 130 when interrupted."""
    try:
        args = config_files.expand(sys.argv[1:], typer.main.get_command(app))
        result = app(args=args, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as shown:
        shown.show()  # `r1` or `r1 toy` alone: the help
        sys.exit(0)
    except click_errors.UsageError as usage:
        if _debug["on"]:
            raise
        command = usage.ctx.command_path if usage.ctx is not None else "r1"
        print_error(f"{usage.format_message()} (see: {command} --help)")
        sys.exit(EXIT_USER_ERROR)
    except UserError as error:
        if _debug["on"]:
            raise
        print_error(str(error))
        sys.exit(EXIT_USER_ERROR)
    except OSError as error:
        if _debug["on"] or error.errno not in ENVIRONMENT_ERRORS:
            raise
        print_error(f"{error.filename or 'an output'}: {ENVIRONMENT_ERRORS[error.errno]}")
        sys.exit(EXIT_USER_ERROR)
    except (KeyboardInterrupt, typer.Abort):
        console.print("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


# Errors of the machine rather than of r1: said in one line, like bad input.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "no space left on the device (free some, then run the same command again: it resumes)",
    errno.EDQUOT: "disk quota exceeded (free some, then run the same command again: it resumes)",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
}
