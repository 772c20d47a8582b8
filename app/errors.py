"""The service's own errors, beside the pipeline's (core/errors.py) and the store's
(app/gallery/records.py): raised where the rule is, each mapped to one status in app/statuses.py."""

from __future__ import annotations

from typing import Protocol


class UploadTooLarge(Exception):
    def __init__(self, source: str, limit: int) -> None:
        super().__init__(f"{source}: upload larger than {limit} bytes")


class TooManyUploads(Exception):
    def __init__(self, sent: int, limit: int) -> None:
        super().__init__(f"{sent} images sent; at most {limit} per enrolment")


class PersonNotFound(Exception):
    def __init__(self, person_id: str) -> None:
        super().__init__(f"person {person_id!r} not found")


class FaceNotFound(Exception):
    def __init__(self, person_id: str, face_id: int, why: str = "not found") -> None:
        super().__init__(f"face {face_id} of person {person_id!r} {why}")


class EnrolledPhoto(Protocol):
    person_id: str
    photo: str
    similarity: float


class CopyOfAnotherPerson(Exception):
    """An enrolment photo that is a copy of a photo enrolled for another person: a mislabel, unless confirmed."""

    def __init__(self, source: str, copy: EnrolledPhoto, person_id: str) -> None:
        super().__init__(f"{source}: a copy of {copy.photo!r}, enrolled for {copy.person_id!r} (photo similarity {copy.similarity:.2f}), "
                         f"not {person_id!r}; confirm the copy (confirm_copy=true, or faceid gallery import --confirm-copies) "
                         "to enrol it anyway")


class UnknownsOff(Exception):
    def __init__(self) -> None:
        super().__init__("the unknown-faces log is off (FACEID_UNKNOWNS)")


class UnknownClusterNotFound(Exception):
    def __init__(self, cluster_id: int, what: str = "unknown cluster") -> None:
        super().__init__(f"{what} {cluster_id} not found (the log changed since it was listed, or its faces were purged)")


class BadRequestField(Exception):
    """A form field that passed the schema but makes no sense with the rest of the request."""


class ExportOfAnotherModel(Exception):
    """A gallery export whose embeddings another model made, without the crops to make them again."""

    def __init__(self, theirs: list[str], ours: str) -> None:
        super().__init__(f"the export holds embeddings made by {', '.join(theirs)} and no face crops, but this service runs {ours}: "
                         f"export it again with crops (faceid gallery export --crops), or import it into a service running {theirs[0]}")
