"""Domain errors of the face pipeline; the service maps each to one HTTP status."""

from __future__ import annotations


class FaceIdError(Exception):
    """Base class: every pipeline error names the input it is about."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class InvalidImage(FaceIdError):
    """Bytes that are not a decodable image of a supported format."""


class UnsupportedFormat(InvalidImage):
    """A real image in a format the service does not accept."""


class ImageTooLarge(FaceIdError):
    """An image with more pixels than allowed (decompression bombs included)."""


class NoFaceFound(FaceIdError):
    """No face was detected, even after the enhancement retries."""


class TooManyFaces(FaceIdError):
    """Several faces where exactly one was required (enrolment)."""


class UnusableFace(FaceIdError):
    """A face too poor to serve as an enrolment reference (blown out, or black)."""


class WeightsError(FaceIdError):
    """A weights file that is missing, corrupt, or not a FaceNet backbone."""
