"""Files and folders only their owner may read: the database, the data folder (it holds the
secret key) and the per-run folders (issue 12). Modes are set explicitly, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

#: Mode of a private folder: the owner only.
PRIVATE_DIR_MODE = 0o700
#: Mode of a private file: the owner reads and writes.
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` if absent, and make it 0700; missing parents are made 0700 too (so a
    data folder first made for its ``work`` folder is private as well)."""
    missing = [path, *(p for p in path.parents if not p.exists())]
    for folder in reversed([p for p in missing if not p.exists()]):
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def touch_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist; an existing file is made 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    os.chmod(path, PRIVATE_FILE_MODE)
