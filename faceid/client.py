"""A Python client for the faceid service: every route, typed answers (the service's own
response models, so they mirror its OpenAPI document), the API key, a collection, and retries
when the service answers 503 with Retry-After (overloaded, or its database restarting).

    from faceid.client import FaceIdClient

    with FaceIdClient("http://127.0.0.1:8000", key="...") as faceid:
        faceid.enroll("ada", ["ada1.jpg", "ada2.jpg"], name="Ada Lovelace")
        for face in faceid.identify("group.jpg").faces:
            print(face.box, face.match and face.match.person_id)
        print(faceid.verify("a.jpg", person_id="ada").same)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from app.schemas import (
    CollectionPublic,
    DetectResponse,
    EmbeddingResult,
    EnrollResponse,
    ErasureReceipt,
    FacesPage,
    IdentifyResponse,
    ImportResult,
    PersonPublic,
    PersonsPage,
    Ready,
    VerifyResponse,
)

Photo = str | Path | bytes | IO[bytes]  # a file's path, its bytes, or an open binary file
M = TypeVar("M", bound=BaseModel)


class FaceIdError(Exception):
    """The service refused or failed a request: its status and its `detail`."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _file(photo: Photo, name: str) -> tuple[str, bytes, str]:
    if isinstance(photo, str | Path):
        return Path(photo).name, Path(photo).read_bytes(), "application/octet-stream"
    if isinstance(photo, bytes):
        return name, photo, "application/octet-stream"
    return getattr(photo, "name", name), photo.read(), "application/octet-stream"


def _form(**fields: Any) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items() if v is not None}


class FaceIdClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", key: str | None = None, collection: str | None = None,
                 timeout: float = 60.0, retries: int = 3, max_retry_wait_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = ({"X-API-Key": key} if key else {}) | ({"X-Collection": collection} if collection else {})
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.max_retry_wait_s = retries, max_retry_wait_s
        self._url, self._key, self._timeout, self._transport = url, key, timeout, transport

    def __enter__(self) -> FaceIdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the one way a request is made ---------------------------------------------------------
    def _request(self, method: str, path: str, ok: Sequence[int] = (), **kw: Any) -> httpx.Response:
        """The response, once it is not a 503 that says when to come back (or the retries are spent)."""
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kw)
            wait = response.headers.get("Retry-After")
            if response.status_code != 503 or wait is None or attempt == self.retries or not wait.isdigit():
                break
            time.sleep(min(float(wait), self.max_retry_wait_s))
        if response.is_success or response.status_code in ok:
            return response
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise FaceIdError(response.status_code, detail)

    def _model(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(self._request(method, path, **kw).json())

    # -- health ---------------------------------------------------------------------------------
    def healthz(self) -> bool:
        return self._request("GET", "/healthz").json().get("status") == "ok"

    def readyz(self) -> Ready:
        """The service's readiness, ready or not (a 503 here is an answer, not an error)."""
        return Ready.model_validate(self._request("GET", "/readyz", ok=(503,)).json())

    # -- who is it -----------------------------------------------------------------------------
    def identify(self, photo: Photo, top_k: int | None = None, threshold: float | None = None, max_faces: int | None = None) -> IdentifyResponse:
        return self._model(IdentifyResponse, "POST", "/identify", files={"image": _file(photo, "photo.jpg")},
                           data=_form(top_k=top_k, threshold=threshold, max_faces=max_faces))

    def identify_embedding(self, embedding: Sequence[float], top_k: int | None = None, threshold: float | None = None) -> EmbeddingResult:
        body = {"embedding": list(map(float, embedding))} | ({"top_k": top_k} if top_k else {}) | ({"threshold": threshold} if threshold is not None else {})
        return self._model(EmbeddingResult, "POST", "/identify/embedding", json=body)

    def verify(self, photo: Photo, photo2: Photo | None = None, person_id: str | None = None, threshold: float | None = None) -> VerifyResponse:
        """Two photos, or a photo and an enrolled person: one person?"""
        files = [("image", _file(photo, "a.jpg"))] + ([("image2", _file(photo2, "b.jpg"))] if photo2 is not None else [])
        return self._model(VerifyResponse, "POST", "/verify", files=files, data=_form(person_id=person_id, threshold=threshold))

    def detect(self, photo: Photo, max_faces: int | None = None, crops: bool = False) -> DetectResponse:
        return self._model(DetectResponse, "POST", "/detect", files={"image": _file(photo, "photo.jpg")},
                           data=_form(max_faces=max_faces, crops=crops))

    # -- persons ---------------------------------------------------------------------------------
    def enroll(self, person_id: str, photos: Sequence[Photo], name: str | None = None, box: Sequence[float] | None = None,
               confirm_copy: bool = False) -> EnrollResponse:
        files = [("images", _file(p, f"{person_id}_{i}.jpg")) for i, p in enumerate(photos)]
        return self._model(EnrollResponse, "POST", "/enroll", files=files,
                           data=_form(person_id=person_id, name=name, box=",".join(map(str, box)) if box else None,
                                      confirm_copy=confirm_copy or None))

    def persons(self, offset: int = 0, limit: int = 100, q: str | None = None) -> PersonsPage:
        return self._model(PersonsPage, "GET", "/persons", params=_form(offset=offset, limit=limit, q=q))

    def person(self, person_id: str) -> PersonPublic:
        return self._model(PersonPublic, "GET", f"/persons/{person_id}")

    def faces(self, person_id: str, offset: int = 0, limit: int = 100) -> FacesPage:
        return self._model(FacesPage, "GET", f"/persons/{person_id}/faces", params=_form(offset=offset, limit=limit))

    def crop(self, person_id: str, face_id: int) -> bytes:
        """A stored face's aligned 160×160 crop, PNG."""
        return self._request("GET", f"/persons/{person_id}/faces/{face_id}/crop").content

    def delete_person(self, person_id: str) -> ErasureReceipt:
        """The person and every trace of them; the erasure receipt."""
        return self._model(ErasureReceipt, "DELETE", f"/persons/{person_id}")

    # -- collections -----------------------------------------------------------------------------
    def collection(self, name: str) -> FaceIdClient:
        """A client on the same connection settings, working in collection `name`."""
        return FaceIdClient(self._url, self._key, name, self._timeout, self.retries, self.max_retry_wait_s, self._transport)

    def collections(self) -> list[CollectionPublic]:
        return TypeAdapter(list[CollectionPublic]).validate_python(self._request("GET", "/collections").json())

    def create_collection(self, name: str, threshold: float | None = None, verify_threshold: float | None = None,
                          photo_threshold: float | None = None) -> CollectionPublic:
        body = {"name": name, "threshold": threshold, "verify_threshold": verify_threshold, "photo_threshold": photo_threshold}
        return self._model(CollectionPublic, "POST", "/collections", json={k: v for k, v in body.items() if v is not None})

    def describe_collection(self, name: str) -> CollectionPublic:
        return self._model(CollectionPublic, "GET", f"/collections/{name}")

    def delete_collection(self, name: str) -> None:
        self._request("DELETE", f"/collections/{name}")

    def export(self, path: str | Path, crops: bool = False) -> Path:
        """This client's collection, in one file at `path`."""
        with self._http.stream("GET", "/export", params=_form(crops=crops)) as response:
            if not response.is_success:
                response.read()
                raise FaceIdError(response.status_code, response.json().get("detail", response.text))
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return Path(path)

    def import_file(self, path: str | Path) -> ImportResult:
        with open(path, "rb") as f:
            return self._model(ImportResult, "POST", "/import", files={"file": (Path(path).name, f, "application/gzip")})
