"""The Hugging Face hub: which names mean a hub repository, and failing fast where it cannot be used.

A name that is not a local path and is spelled OWNER/NAME is a hub repository (a model, or a
dataset for record inputs). Before a library asks the hub for one, `access` settles whether the
hub can be asked: with HF_HUB_OFFLINE set it is not; otherwise one short request to the endpoint
says whether it answers. Where it does not, the process goes offline, so the libraries read their
local caches at once instead of retrying each file for most of a minute, and a name that is in no
cache fails with one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from r1cli.console import log

# OWNER/NAME as the hub allows them (letters, digits, '-', '_', '.'), and not a data file's name
# (`runs/data.jsonl` that does not exist is a missing file, not a dataset on the hub).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".gz", ".zst", ".bz2", ".xz")
PROBE_SECONDS = 3.0


def is_hub_name(name: str) -> bool:
    """Whether NAME, which is no local path, names a hub repository (OWNER/NAME)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.lower().endswith(DATA_FILE_SUFFIXES)


@dataclass
class HubAccess:
    """Whether this process may ask the hub, and if not, why (for the one line of a failure)."""

    online: bool
    reason: str = ""
    unreachable: bool = False  # offline because the endpoint did not answer (not by HF_HUB_OFFLINE)


_access: list[HubAccess] = []


def access() -> HubAccess:
    """Settle once per process whether the hub may be asked (see the module's docstring); call it
    before a library loads a hub repository, which then either may download or reads its cache
    without a single network retry."""
    if _access:
        return _access[0]
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        found = HubAccess(False, "HF_HUB_OFFLINE is set, so nothing is downloaded")
    else:
        problem = _probe(constants.ENDPOINT)
        found = HubAccess(problem is None, f"{constants.ENDPOINT} cannot be reached ({problem})" if problem else "", problem is not None)
        if problem:
            _go_offline()
    _access.append(found)
    return found


def loaded(name: str, what: str) -> None:
    """Say where a hub repository came from when the hub could not be reached (its cached copy)."""
    state = access()
    if state.unreachable:
        log(f"{name}: the {what} is read from the local Hugging Face cache ({state.reason})")


def unavailable(name: str, what: str) -> str | None:
    """The one line for a hub repository NAME (a WHAT: model, dataset) that failed to load while the
    hub was out of reach, or None when the hub was reachable (the library's own error then says more)."""
    state = access()
    if state.online:
        return None
    return f"{name}: not a local path, and no {what} of that name is in the local Hugging Face cache ({state.reason})"


def _probe(endpoint: str) -> str | None:
    """None when ENDPOINT answers (any HTTP status), else what went wrong, in a few words.
    Through the hub library's own client, so that its proxy settings apply."""
    try:
        from huggingface_hub.utils import get_session

        get_session().head(endpoint, timeout=PROBE_SECONDS)
    except Exception as error:  # connection refused, unknown host, a timeout: the client's many error types
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return None


def _go_offline() -> None:
    """HF_HUB_OFFLINE for the rest of this process (the libraries read it at import, so their copies
    are set too) and for any process it starts."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config
    except ImportError:  # pragma: no cover - datasets is a dependency
        return
    datasets.config.HF_HUB_OFFLINE = True
