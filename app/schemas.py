"""Request and response bodies, split by role."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from core.constants import EMBEDDING_DIM

PERSON_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"


class PersonPublic(BaseModel):
    person_id: str
    name: str | None
    n_faces: int
    created_at: str


class PersonsPage(BaseModel):
    items: list[PersonPublic]
    total: int
    offset: int
    limit: int


class EnrollResponse(BaseModel):
    person: PersonPublic
    faces_added: int
    created: bool


class Match(BaseModel):
    person_id: str
    name: str | None
    similarity: float


class FaceResult(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels")
    detection_score: float | None
    match: Match | None = Field(description="null: unknown (best similarity below the threshold)")
    candidates: list[Match]


class IdentifyResponse(BaseModel):
    faces: list[FaceResult]
    threshold: float
    model_id: str


class EmbeddingQuery(BaseModel):
    embedding: list[float] = Field(min_length=EMBEDDING_DIM, max_length=EMBEDDING_DIM)
    top_k: int | None = Field(None, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)

    @field_validator("embedding")
    @classmethod
    def _finite_nonzero(cls, value: list[float]) -> list[float]:
        import math

        if not all(math.isfinite(v) for v in value):
            raise ValueError("embedding has non-finite values")
        if not any(value):
            raise ValueError("embedding is all zeros")
        return value


class EmbeddingResult(BaseModel):
    match: Match | None
    candidates: list[Match]
    threshold: float
    model_id: str


class Ready(BaseModel):
    ready: bool
    model_id: str
    persons: int
    faces: int
    index_size: int
    index: str
    detail: str | None = None
