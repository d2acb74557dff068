"""Reading a pack upload: the multipart form Attune's clients send (field ``pack`` holding a
``.tar.gz``; text fields ``force`` and ``skip_tests``), size-capped while it streams in."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from config import Settings
from engine.errors import InvalidRequest, PayloadTooLarge


@dataclass(frozen=True)
class PackUpload:
    archive: bytes
    force: bool
    skip_tests: bool


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


async def _read_capped(part: BodyPartReader, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_pack_archive(request: web.Request, settings: Settings) -> PackUpload:
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("send the pack as multipart/form-data, the archive in field 'pack'")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}") from None
    archive: bytes | None = None
    flags = {"force": False, "skip_tests": False}
    limit = settings.pack_upload_max_bytes
    while True:
        try:
            part = await reader.next()
        except ValueError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest("nested multipart bodies are not accepted")
        if part.name == "pack":
            archive = await _read_capped(part, limit, "the pack archive")
        elif part.name in flags:
            flags[part.name] = _truthy((await _read_capped(part, 64, part.name)).decode())
        else:
            await part.release()
    if archive is None:
        raise InvalidRequest("missing required 'pack' field in multipart upload")
    return PackUpload(archive, flags["force"], flags["skip_tests"])
