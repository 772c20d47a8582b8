"""A gallery in one file, to back it up or move it: `faceid gallery export` / `import`, and the
admin routes /export and /import.

The file is gzip-compressed JSON lines: a header (the format, the models that made the
embeddings, the collection, when, whether crops are in it, how many persons and faces), then
every person, then every face with its embedding, its photo evidence (thumbnail, projected
descriptor, the face's box in its photo) and, when exported with crops, the aligned crop that a
service running another model re-embeds it from. Bytes are base64. It is read as a stream, so a
large gallery is never held in memory whole.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from app.gallery.records import FACE_COLUMNS, NewFace, PersonRow, PhotoRecord, box_of, now
from app.gallery.sealing import CROP, EMBEDDING, THUMB, VECTOR, Sealer
from app.gallery.store import Store
from core.constants import EMBEDDING_DIM
from core.errors import FaceIdError
from core.photos.descriptor import PROJECTED_DIM, THUMB_SIDE

FORMAT, VERSION = "faceid-gallery", 1
BATCH = 500
COLUMN = {name: i for i, name in enumerate(FACE_COLUMNS)}


class InvalidExport(FaceIdError):
    """A file that is not a gallery export this service reads."""


@dataclass(frozen=True)
class Header:
    models: dict[str, int]  # model id → faces it embedded
    collection: str
    crops: bool
    persons: int
    faces: int
    exported_at: str = field(default_factory=now)


@dataclass(frozen=True)
class ExportedFace:
    person_id: str
    face: NewFace  # its crop is None unless exported with crops
    model_id: str


def _b64(data: bytes | memoryview | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode()


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _face_line(row: tuple, crops: bool, sealer: Sealer) -> dict[str, Any]:
    """A face as the file holds it: its values opened (an export is in the clear; keep it as
    carefully as the gallery)."""
    photo = None
    if row[COLUMN["photo_vector"]] is not None:
        photo = {"thumb": _b64(sealer.open(row[COLUMN["photo_thumb"]], THUMB)), "vector": _b64(sealer.open(row[COLUMN["photo_vector"]], VECTOR)),
                 "box": list(box_of(row[COLUMN["photo_box"]]))}
    return {"face": {"person_id": row[COLUMN["person_id"]], "source": row[COLUMN["source"]], "model_id": row[COLUMN["model_id"]],
                     "created_at": row[COLUMN["created_at"]], "embedding": _b64(sealer.open(row[COLUMN["embedding"]], EMBEDDING)),
                     "crop": _b64(sealer.open(row[COLUMN["crop"]], CROP)) if crops else None, "photo": photo}}


def write_export(store: Store, out: IO[bytes], collection: str, crops: bool) -> Header:
    """Every person and face of `store` into `out` (a binary stream), with crops if asked."""
    persons, faces = store.counts()
    header = Header(store.model_ids(), collection, crops, persons, faces)
    with gzip.GzipFile(fileobj=out, mode="wb") as z:
        def line(obj: dict) -> None:
            z.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

        line({"format": FORMAT, "version": VERSION, "models": header.models, "collection": collection, "crops": crops,
              "persons": persons, "faces": faces, "exported_at": header.exported_at})
        for person_id, name, created_at, consent in store.all_persons():
            line({"person": {"person_id": person_id, "name": name, "created_at": created_at, "consent": consent}})
        after = 0
        while rows := store.face_rows(after, BATCH):
            for row in rows:
                line(_face_line(row, crops, store.sealer))
            after = int(rows[-1][0])
    return header


def read_export(stream: IO[bytes]) -> tuple[Header, Iterator[PersonRow | ExportedFace]]:
    """The header, then the persons and faces in the file's order (persons first)."""
    lines = _lines(stream)
    first = next(lines, None)
    if not isinstance(first, dict) or first.get("format") != FORMAT:
        raise InvalidExport("export", "not a faceid gallery export (no header)")
    if first.get("version") != VERSION:
        raise InvalidExport("export", f"a gallery export of version {first.get('version')}; this service reads version {VERSION}")
    try:
        header = Header({str(k): int(v) for k, v in first["models"].items()}, str(first["collection"]), bool(first["crops"]),
                        int(first["persons"]), int(first["faces"]), str(first["exported_at"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidExport("export", f"its header is damaged ({exc})") from exc
    return header, (_record(obj, number) for number, obj in enumerate(lines, 2))


def _lines(stream: IO[bytes]) -> Iterator[Any]:
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as z:
            for raw in z:
                yield json.loads(raw)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # not gzip, cut short, or not JSON
        raise InvalidExport("export", f"not a readable gallery export ({type(exc).__name__}: {exc})") from exc


def _record(obj: Any, number: int) -> PersonRow | ExportedFace:
    try:
        if "person" in obj:
            p = obj["person"]
            return str(p["person_id"]), p["name"], str(p["created_at"]), p.get("consent")
        f = obj["face"]
        embedding = np.frombuffer(_bytes(f["embedding"]) or b"", dtype=np.float32)
        if embedding.shape != (EMBEDDING_DIM,):
            raise ValueError(f"an embedding of {embedding.size} values")
        photo = None
        if (p := f.get("photo")) is not None:
            thumb = np.frombuffer(_bytes(p["thumb"]) or b"", dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE)
            vector = np.frombuffer(_bytes(p["vector"]) or b"", dtype=np.float32).reshape(PROJECTED_DIM)
            x1, y1, x2, y2 = (float(v) for v in p["box"])
            photo = PhotoRecord(thumb, vector, (x1, y1, x2, y2))
        face = NewFace(str(f["source"]), embedding, _bytes(f.get("crop")), photo, created_at=str(f["created_at"]))
        return ExportedFace(str(f["person_id"]), face, str(f["model_id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidExport("export", f"line {number} is damaged ({exc})") from exc
