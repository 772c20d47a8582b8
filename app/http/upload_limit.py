"""Reading uploads with a hard size limit, so a huge body is refused, not buffered."""

from __future__ import annotations

from fastapi import UploadFile

from app.errors import UploadTooLarge

CHUNK = 1 << 16


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise UploadTooLarge(name, limit)
    parts, total = [], 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(name, limit)
        parts.append(chunk)
    return b"".join(parts)
