"""`--config FILE` on every command: options from a YAML or JSON file, the command line over them.

The file's keys are option names (`lr`, `max_new_tokens` or `max-new-tokens`; any spelling of the
option, so `min` for `--min` and TRL's `max_completion_length` too; arguments too: `model`, `prompts`). A run's `r1.json` is such a file: its `options` replay that run. The file is
expanded into command-line tokens before the command line is parsed, for every option the
command line does not give itself, so a value from the file is checked exactly as a typed one.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1cli.errors import UserError

OPTION = "--config"
HELP = ("YAML or JSON file of options (keys are option names, e.g. lr or max_new_tokens); the command line overrides it. "
        "A run's r1.json replays that run.")


def config_argument(args: list[str]) -> tuple[str | None, list[str]]:
    """The --config FILE among ARGS, and ARGS without it."""
    rest, path = [], None
    index = 0
    while index < len(args):
        token = args[index]
        if token == OPTION:
            if index + 1 >= len(args):
                raise UserError(f"{OPTION} needs a file")
            path, index = args[index + 1], index + 2
            continue
        if token.startswith(OPTION + "="):
            path = token.split("=", 1)[1]
        else:
            rest.append(token)
        index += 1
    return path, rest


def read_config(path: str, command: str) -> tuple[dict, bool]:
    """The options in PATH, and whether it is a run's r1.json (whose extra keys are lineage, not options)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{OPTION} {path}: no such file")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # noqa: BLE001 - a syntax error of either format
        raise UserError(f"{path}: not valid {'YAML' if file.suffix in ('.yaml', '.yml') else 'JSON'} ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    lineage = isinstance(values.get("options"), dict) and "command" in values
    if lineage:
        if values["command"] != command:
            raise UserError(f"{path}: a run of `r1 {values['command']}`, not of `r1 {command}`")
        values = values["options"]
    return {str(key).replace("-", "_"): value for key, value in values.items()}, lineage


def expand(argv: list[str], group) -> list[str]:
    """ARGV with the --config file's options added as tokens where the command line has none."""
    head = 0
    while head < len(argv) and argv[head].startswith("-"):
        head += 1  # r1's own options (--debug)
    if head >= len(argv) or argv[head] not in group.commands:
        return argv
    name, command = argv[head], group.commands[argv[head]]
    path, args = config_argument(argv[head + 1 :])
    if path is None or not hasattr(command, "params"):
        return argv
    values, lineage = read_config(path, name)
    params = {p.name: p for p in command.params}
    # Every long spelling of an option (not the --no-X of a flag, which would invert it).
    spellings = {flag.lstrip("-").replace("-", "_"): p for p in command.params for flag in p.opts if flag.startswith("--")}
    context = command.make_context(name, list(args), resilient_parsing=True)
    options, positionals = [], []
    for key, value in values.items():
        param = params.get(key) or spellings.get(key)
        if param is not None and param.name != key and param.name in values:
            raise UserError(f"{path}: {key!r} and {param.name!r} are the same option; give it once")
        key = param.name if param is not None else key
        if param is None or key == "config":
            if lineage:
                continue  # recorded for the lineage (e.g. a derived setting), not an option
            raise UserError(f"{path}: {key!r} is not an option of `r1 {name}` (see: r1 {name} --help)")
        source = context.get_parameter_source(key)
        if value is None or (source is not None and source.name != "DEFAULT"):
            continue  # unset in the file, or given on the command line
        if param.param_type_name == "argument":
            positionals += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        elif getattr(param, "is_flag", False):
            if not isinstance(value, bool):
                raise UserError(f"{path}: {key!r} must be true or false")
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            if flag:
                options.append(flag)
        elif getattr(param, "nargs", 1) > 1:  # one option of several values (--adam-betas 0.9 0.95)
            options += [param.opts[0], *map(str, value)]
        elif isinstance(value, list):
            for item in value:
                options += [param.opts[0], str(item)]
        else:
            options += [param.opts[0], str(value)]
    return [*argv[: head + 1], *args, *options, *positionals]
