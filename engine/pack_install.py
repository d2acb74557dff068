"""Installing an uploaded pack: a ``.tar.gz`` unpacked safely (no links, devices, absolute
paths or ``..``; size- and count-capped) and moved into the server's pack store, where it is
found again at the next start."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

import yaml

from engine.errors import Conflict, InvalidRequest, PackError

#: Most files an uploaded pack may hold, and most bytes once unpacked.
MAX_FILES = 2_000
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def _members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = archive.getmembers()
    if len(members) > MAX_FILES:
        raise InvalidRequest(f"the archive holds more than {MAX_FILES} files")
    total = 0
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise InvalidRequest(f"the archive holds '{member.name}', which is not a plain file")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise InvalidRequest(f"the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    return members


def unpack(data: bytes, into: Path) -> None:
    """Unpack a gzip'd tar into ``into`` with the standard library's ``data`` filter (which
    refuses absolute paths, ``..`` and links out of the folder)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            archive.extractall(into, members=_members(archive), filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidRequest(f"failed to extract the pack archive: {exc}") from None


def find_pack_root(folder: Path) -> Path:
    """``pack.yaml`` at the top, or inside a single top-level folder (as release tarballs are)."""
    if (folder / "pack.yaml").is_file():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "pack.yaml").is_file():
        return entries[0]
    raise InvalidRequest(
        "could not find pack.yaml in the archive: put it at the root or in a single folder"
    )


def pack_ref_of(root: Path) -> str:
    try:
        meta = yaml.safe_load((root / "pack.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise PackError(f"pack.yaml: cannot read: {exc}") from None
    ref = meta.get("ref") if isinstance(meta, dict) else None
    if not isinstance(ref, str) or not ref.replace("_", "").replace("-", "").isalnum():
        raise PackError("pack.yaml: 'ref' must be a name of letters, digits, '_' or '-'")
    return ref


def store_upload(data: bytes, store_dir: Path, *, force: bool) -> Path:
    """Unpack ``data`` and move the pack to ``store_dir/<ref>``; an installed pack of that ref
    is replaced only with ``force``. Returns the pack's folder."""
    store_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store_dir, prefix=".upload-") as tmp:
        unpack(data, Path(tmp))
        root = find_pack_root(Path(tmp))
        ref = pack_ref_of(root)
        final = store_dir / ref
        if final.exists():
            if not force:
                raise Conflict(f"pack '{ref}' is already installed; pass force=true to replace it")
            shutil.rmtree(final)
        shutil.move(str(root), final)
    return final
