"""Parameters as shell variables for inline shell scripts, as Attune's worker gives them
(``$name`` and ``$PARAM_NAME``), without ever splicing a value into the script's text.

Attune writes ``name='value'`` lines into the script. Here the values go to a 0400 file as
NUL-separated name/value pairs, and a fixed preamble assigns them with ``printf -v``, which
stores the bytes as they are: no value is ever read as code. The variables are not exported
(as Attune's are not), so child processes do not see them. Only bash has ``printf -v``; under
a plain ``sh`` inline scripts read their parameters from stdin or the parameters file only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: What a shell variable name may be; other parameter names get no variable.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Names that would change how the script itself runs; never set from a parameter.
_RESERVED = frozenset(
    {
        "PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
        "CDPATH", "GLOBIGNORE", "HOME", "OPTIND", "OPTARG", "BASH_XTRACEFD", "FUNCNEST",
    }
)  # fmt: skip
#: The environment variable naming the file (the preamble reads it, then unsets it).
VARS_FILE_ENV = "ATTUNE_PARAMETER_VARS_FILE"

PREAMBLE = f"""\
# attune: parameters as variables ($name, $PARAM_NAME), read as data from a file
if [ -n "${{{VARS_FILE_ENV}:-}}" ]; then
  while IFS= read -r -d '' __attune_k && IFS= read -r -d '' __attune_v; do
    printf -v "$__attune_k" '%s' "$__attune_v"
    printf -v "PARAM_${{__attune_k^^}}" '%s' "$__attune_v"
  done < "${VARS_FILE_ENV}"
  unset __attune_k __attune_v {VARS_FILE_ENV}
fi
"""


def _text(value: Any) -> str:
    """A value as Attune's wrapper writes it: strings as they are, numbers and booleans as
    JSON spells them, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def encode(parameters: Mapping[str, Any]) -> bytes:
    """The NUL-separated pairs of the parameters a shell variable can hold."""
    out = bytearray()
    for name, value in parameters.items():
        text = _text(value)
        if not _NAME.match(name) or name.upper() in _RESERVED or "\0" in text:
            continue
        if f"PARAM_{name.upper()}" in _RESERVED:
            continue
        out += name.encode() + b"\0" + text.encode() + b"\0"
    return bytes(out)


def write_vars_file(parameters: Mapping[str, Any], folder: Path) -> Path:
    path = folder / "parameters.vars"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as fh:
        fh.write(encode(parameters))
    return path
