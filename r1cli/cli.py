"""The `r1` command: registers each stage's typed function as a subcommand, nothing more."""

from __future__ import annotations

import os
import sys

import typer

from r1cli import __version__, distill, evaluate, filter, grpo, mix, plot, sample, sft, summary, toy
from r1cli.console import console
from r1cli.console import error as print_error
from r1cli.errors import EXIT_USER_ERROR, UserError

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
app.add_typer(toy.app, name="toy")


def main() -> None:
    try:
        app()
    except UserError as error:
        if _debug["on"]:
            raise
        print_error(str(error))
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
