"""Request and response bodies, split by role."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, JsonValue, field_validator

from core.constants import EMBEDDING_DIM

PERSON_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"
# A collection's name is also a folder, a PostgreSQL schema and a channel name: kept that plain.
COLLECTION_PATTERN = r"^[a-z0-9][a-z0-9_]{0,39}$"
_NUMBER = r"\s*\d{1,6}(\.\d{1,3})?\s*"
BOX_PATTERN = rf"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$"


def rounded_box(box: tuple[float, ...]) -> list[float]:
    """A box as answers carry it: x1, y1, x2, y2 to a tenth of a pixel."""
    return [round(v, 1) for v in box]


class PersonPublic(BaseModel):
    person_id: str
    name: str | None
    n_faces: int
    created_at: str
    consent: str | None = Field(None, description="the consent reference given at enrolment (free text or an id), if any")


class PersonsPage(BaseModel):
    items: list[PersonPublic]
    total: int
    offset: int
    limit: int


class FacePublic(BaseModel):
    """A stored face: what enrolled it and when; its crop is at .../faces/{face_id}/crop."""

    face_id: int
    source: str = Field(description="the enrolled photo's file name")
    model_id: str
    created_at: str
    has_crop: bool = Field(description="whether the aligned 160×160 face crop is stored")
    photo_evidence: bool = Field(description="whether its photo is described, so that copies of it are recognised")


class FacesPage(BaseModel):
    person_id: str
    items: list[FacePublic]
    total: int
    offset: int
    limit: int


class PhotoMatch(BaseModel):
    """Photo evidence: this photo is a copy of an enrolled photo. It says nothing of the face's
    looks; a photo that was never enrolled gets none, whoever is in it."""

    person_id: str
    name: str | None
    photo: str = Field(description="the enrolled photo's file name")
    similarity: float = Field(description="the photo descriptor's similarity (not a face cosine)")


class EnrolledFace(BaseModel):
    source: str = Field(description="the uploaded file's name")
    box: list[float] = Field(description="the face enrolled: x1, y1, x2, y2 in image pixels")
    ignored: list[list[float]] = Field(description="other, smaller faces in the photo, not enrolled")
    copy_of: PhotoMatch | None = Field(None, description="the enrolled photo this one is a copy of (photo evidence), if any")


class EnrollResponse(BaseModel):
    person: PersonPublic
    faces_added: int
    created: bool
    faces: list[EnrolledFace]
    advice: str | None = Field(None, description="how to enrol this person better (a person with one photo only: add a second, different one)")
    seen_before_as_unknown: list[str] = Field(default_factory=list, description=(
        "with the unknown-faces log on: when faces like this person's were answered as unknown before (ISO 8601, UTC)"))


class Match(BaseModel):
    person_id: str
    name: str | None
    similarity: float


class QualityPublic(BaseModel):
    score: float = Field(ge=0, le=1, description="1: nothing wrong; 0: the face cannot be recognised")
    reasons: list[str] = Field(description="what is wrong, worst first: over_exposed, too_dark, noisy, blurred, too_small, uncertain_detection")


Evidence = Literal["face", "photo"]


class FaceResult(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels")
    detection_score: float | None = Field(description="null for a face placed by photo evidence where no face was detected")
    quality: QualityPublic | None = Field(description="why a face may go unnamed, or be named wrongly; null for a face no detector found")
    match: Match | None = Field(description="who this face is, by `evidence`; null: unknown (a face gone to glare or darkness, "
                                "blown out nearly whole or black, is never named by face evidence; its quality says why)")
    evidence: list[Evidence] = Field(default_factory=list, description="what supports `match`: face (its looks), photo (the photo "
                                     "is a copy of an enrolled one), or both; empty when unknown")
    candidates: list[Match] = Field(description="face evidence: the most similar enrolled people by their template (the mean of their faces)")
    photo_match: PhotoMatch | None = Field(None, description="photo evidence on its own, when this face is where an enrolled copy's face was")
    conflict: bool = Field(False, description="face and photo evidence name different people; `match` follows the photo")


class Landmarks(BaseModel):
    """MTCNN's five points, each [x, y] in the photo's pixels; left and right as the photo shows them."""

    left_eye: list[float]
    right_eye: list[float]
    nose: list[float]
    mouth_left: list[float]
    mouth_right: list[float]


class DetectedFacePublic(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the photo's pixels (upright, as its EXIF orientation shows it)")
    detection_score: float | None = Field(description="the detector's probability of a face")
    landmarks: Landmarks | None = Field(description="null for a face placed by the box regressor (glare, rain, heavy noise), which finds none")
    quality: QualityPublic
    crop: str | None = Field(None, description="with crops=true: the 160×160 face crop the embedding is made from, a base64 PNG")


class DetectResponse(BaseModel):
    faces: list[DetectedFacePublic] = Field(description="every face, largest first; empty when the photo holds none")
    photo_size: list[int] = Field(description="the photo's width and height, upright")


class VerifiedFace(BaseModel):
    photo: str = Field(description="the uploaded file's name")
    box: list[float] | None = Field(description="the subject face verified, x1, y1, x2, y2 in the photo's pixels; "
                                    "null when none was found and photo evidence decided")
    detection_score: float | None
    quality: QualityPublic | None = Field(description="why a face may not be verified by its looks (a face gone to glare or darkness never is)")


class VerifyResponse(BaseModel):
    same: bool = Field(description="one person, by `evidence`")
    similarity: float | None = Field(description="face evidence: the two faces' cosine (against a person: the best over their "
                                     "enrolled faces); null when a face was not found")
    threshold: float = Field(description="the 1:1 threshold `same` by face evidence needs (not identification's)")
    evidence: list[Evidence] = Field(description="what says they are one person: face (the looks), photo (a copy of the other "
                                     "photo, or of the person's enrolled photo), or both; empty when `same` is false")
    faces: list[VerifiedFace] = Field(description="the subject face of each photo sent, in order")
    person: PersonPublic | None = Field(None, description="the enrolled person verified against, when `person_id` was sent")
    photo_similarity: float | None = Field(None, description="photo evidence's similarity (not a face cosine); null when off or not measurable")
    photo_threshold: float | None = Field(None, description="photo evidence's threshold; null when photo evidence is off")
    photo_match: PhotoMatch | None = Field(None, description="against a person: the enrolled photo this one is a copy of")
    model_id: str


class IdentifyResponse(BaseModel):
    faces: list[FaceResult]
    threshold: float
    photo_threshold: float | None = Field(None, description="photo evidence's threshold; null when photo evidence is off")
    model_id: str


# Each value of an embedding is 0 or, in magnitude, between SMALLEST and LARGEST: finite in
# float32, and never so small that it flushes to zero there. The schema says so, and that not
# every value is 0, so every vector it admits has a direction and is answered.
SMALLEST, LARGEST = 1e-30, 3.4e38
_VALUE: dict[str, JsonValue] = {"type": "number", "anyOf": [{"const": 0}, {"minimum": SMALLEST, "maximum": LARGEST},
                                                            {"minimum": -LARGEST, "maximum": -SMALLEST}]}


class EmbeddingQuery(BaseModel):
    embedding: list[float] = Field(min_length=EMBEDDING_DIM, max_length=EMBEDDING_DIM, json_schema_extra={
        "items": _VALUE, "not": {"items": {"const": 0}},
        "description": f"{EMBEDDING_DIM} values, each 0 or of magnitude {SMALLEST:g} to {LARGEST:g} (float32), not all 0"})
    top_k: int | None = Field(None, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)

    @field_validator("embedding")
    @classmethod
    def _usable_in_float32(cls, value: list[float]) -> list[float]:
        """The index works in float32: the rule the schema states, checked."""
        vector = np.asarray(value, dtype=np.float64)
        magnitude = np.abs(vector)
        if not np.isfinite(vector).all() or (magnitude > LARGEST).any():
            raise ValueError("embedding has values that are not finite in float32 (NaN, infinity, or beyond ±3.4e38)")
        if ((magnitude > 0) & (magnitude < SMALLEST)).any():
            raise ValueError(f"embedding has values under {SMALLEST:g} in magnitude, which float32 flushes to zero; send 0 or larger")
        if not magnitude.any():
            raise ValueError("embedding is all zeros (in float32 it has no direction); send a vector with a direction")
        return value

    def unit_vector(self) -> np.ndarray:
        vector = np.asarray(self.embedding, dtype=np.float64)  # float64: the norm of 1e-30s does not underflow
        return (vector / np.linalg.norm(vector)).astype(np.float32)


class EmbeddingResult(BaseModel):
    match: Match | None
    candidates: list[Match]
    threshold: float
    model_id: str


class Ready(BaseModel):
    ready: bool = Field(description="the model is loaded, the index matches the store, and the store takes writes")
    model_id: str
    persons: int
    faces: int
    index_size: int
    index: str
    runtime: str = Field(description="what embeds: onnx-int8, onnx (fp32) or torch")
    writable: bool
    threshold: float = Field(description="the face similarity an answer needs when a request gives no threshold")
    photo_threshold: float | None = Field(description="the photo similarity photo evidence needs; null when photo evidence is off")
    store: Literal["sqlite", "postgresql"] = Field(description="sqlite: this process's file; postgresql: one gallery shared by replicas")
    behind: int = Field(description="store changes committed elsewhere (another replica, another process) that this one's index does not hold yet")
    detail: str | None = None


class CollectionCreate(BaseModel):
    name: str = Field(pattern=COLLECTION_PATTERN, description="lower-case letters, digits and _, at most 40")
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="its own identification threshold (default: the service's)")
    verify_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="its own 1:1 threshold (default: the service's)")
    photo_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="its own photo-evidence threshold (default: the service's)")


class CollectionPublic(BaseModel):
    name: str
    created_at: str | None = Field(description="null for the default collection, which always existed")
    threshold: float | None = Field(description="its own identification threshold; null: the service's")
    verify_threshold: float | None
    photo_threshold: float | None
    persons: int | None = Field(None, description="in the answer for one collection")
    faces: int | None = None


class ImportResult(BaseModel):
    persons: int = Field(description="persons in the file")
    faces: int = Field(description="faces added")
    reembedded: int = Field(description="faces whose embedding was made again from their crop (another model made the file's)")
    models: dict[str, int] = Field(description="the models that made the file's embeddings, with their faces")


class ErasureReceipt(BaseModel):
    """What deleting a person removed, and when."""

    person_id: str
    erased_at: str
    faces: int = Field(description="face rows, each with its embedding")
    crops: int = Field(description="aligned face crops")
    photos: int = Field(description="photo thumbnails, with their descriptors")
    unknowns: int = Field(0, description="unknown faces (the unknown-faces log) enrolled as this person")
    index_entries: int = Field(description="entries removed from this replica's face and photo indexes (other replicas remove theirs from "
                               "the change log within moments)")
    snapshot_removed: bool = Field(description="a saved index snapshot that could hold their embeddings was deleted")
    store: str = Field(description="what the store did to its files: SQLite overwrites deleted pages and truncates its write-ahead log; "
                       "PostgreSQL vacuums the tables (its own write-ahead log and backups keep the bytes until recycled)")


class AuditEntryPublic(BaseModel):
    id: int
    at: str = Field(description="ISO 8601, UTC")
    key_id: str | None = Field(description="the API key's id (never the key); null: no key configured; '(unknown key)': a wrong one")
    collection: str
    action: str = Field(description="enrol, delete, identify, verify, detect, read_persons, export, import, purge, expire, "
                        "create_collection, delete_collection, read_collections, read_audit")
    persons: list[str] = Field(description="the person ids written, named or erased")
    outcome: str = Field(description="ok, or the status the request was refused with")
    detail: str | None = Field(description="counts and short facts; never images or embeddings")


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    total: int
    offset: int
    limit: int


class UnknownCluster(BaseModel):
    cluster: int = Field(description="its id: its first face's, while the log keeps that face")
    count: int
    first_seen: str
    last_seen: str
    faces: list[int] = Field(description="a few of its faces' ids, best quality first; crops at /unknowns/faces/{id}/crop")


class UnknownsPage(BaseModel):
    items: list[UnknownCluster] = Field(description="largest first")
    total: int
    offset: int
    limit: int


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every error: a sentence naming the input it is about, or the invalid fields."""

    detail: str | list[FieldError]
