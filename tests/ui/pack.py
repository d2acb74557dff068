"""A pack for the execution pages' tests: a ticker that prints a line every 200 ms for 3 s, a
sleeper to cancel, and an action with a secret parameter."""

from __future__ import annotations

from pathlib import Path

PACK = "pagetest"
FILES = {
    "pack.yaml": f"ref: {PACK}\nlabel: Page tests\ndescription: Page tests\nversion: 1.0.0\n",
    "actions/ticker.yaml": (
        "name: ticker\ndescription: A line every 200 ms for 3 s\nrunner_type: shell\n"
        "entry_point: ticker.sh\ntimeout_seconds: 60\nparameters:\n"
        "  host:\n    type: string\n    default: web1\n"
        "  token:\n    type: string\n    secret: true\n"
    ),
    "actions/ticker.sh": (
        '#!/bin/sh\ni=1\nwhile [ $i -le 15 ]; do echo "tick $i"; i=$((i+1)); sleep 0.2; done\n'
        "echo 'a warning' >&2\n"
    ),
    "actions/sleeper.yaml": (
        "name: sleeper\ndescription: Sleeps, to be cancelled\nrunner_type: shell\n"
        "entry_point: sleeper.sh\ntimeout_seconds: 120\n"
    ),
    "actions/sleeper.sh": "#!/bin/sh\necho 'going to sleep'\nsleep 60\n",
    "actions/secretive.yaml": (
        "name: secretive\ndescription: Has a secret\nrunner_type: shell\n"
        "entry_point: secretive.sh\nparameters:\n  name:\n    type: string\n"
        "  token:\n    type: string\n    secret: true\n"
    ),
    "actions/secretive.sh": "#!/bin/sh\ncat > /dev/null\necho 'used the token'\n",
}


def write_pack(packs_dir: Path) -> Path:
    root = packs_dir / PACK
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            path.chmod(0o755)
    return root
