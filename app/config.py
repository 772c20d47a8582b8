"""Service settings: typed, from FACEID_* environment variables, validated once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.gallery.sealing import Sealer
from app.gallery.vector_index import DEFAULT_EF_SEARCH, DEFAULT_HNSW_M, DEFAULT_IVF_NPROBE, IndexSettings
from core.constants import DECODE_MAX_SIDE
from core.images import DEFAULT_MAX_BYTES
from core.photos.descriptor import PHOTO_THRESHOLD


@dataclass(frozen=True)
class ConnectionLimits:
    """What the server holds open (app/http/connection_limits.py enforces them)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    min_body_rate: float = 8 * 1024  # bytes per second, on average
    body_grace_s: float = 10.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEID_", env_file=None, extra="ignore")

    weights: str | None = Field(None, description="backbone: pretrained name, weights file or model folder (default: the shipped model)")
    data_dir: Path = Field(Path("data"), description="where the gallery store lives; created if missing")
    store: SecretStr | None = Field(None, description=(
        "a postgresql:// URL (libpq's: sslmode and the other TLS options pass through): one gallery shared by replicas; "
        "unset: SQLite in data_dir. Never logged; answers show it without its password"))
    store_password_file: Path | None = Field(None, description="a file holding the database password (a container secret), kept out of the URL")
    store_pool_size: int = Field(8, ge=1, le=100, description="PostgreSQL connections per replica")
    read_only: bool = Field(False, description="identification only: the gallery is never changed (enrol and delete answer 503)")
    encryption_key_file: Path | None = Field(None, description=(
        "templates encrypted at rest (AES-256-GCM): a file of keys, 64 hex digits a line, the first sealing; unset: not encrypted"))
    api_key: SecretStr | None = Field(None, description="required in X-API-Key when set (an admin key for every collection); "
                                      "unset, and no keys file: no auth")
    api_keys_file: Path | None = Field(None, description=(
        "a file of API keys, one per line: '<key id> <role> <collection or *> <key or sha256:hex>'; roles identify, enrol, admin"))
    open_probes: bool = Field(False, description="with a key set, leave /readyz and /metrics open (for probes that cannot send it)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto", description=("embedding runtime: auto is ONNX Runtime on the CPU, torch on CUDA; onnx-int8 is its quantized copy, "
                             "checked against fp32 on this CPU at start (fp32 ONNX if refused)"))
    detect_runtime: Literal["auto", "openvino", "torch"] = Field(
        "auto", description="MTCNN's nets on the CPU: auto is OpenVINO when installed (torch if it cannot load), torch is eager torch")
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="cosine below which a face is unknown (default: the model's FAR 1e-3 threshold)")
    verify_threshold: float | None = Field(None, ge=-1.0, le=1.0, description=(
        "/verify's cosine from which two faces are one person (default: the model's 1:1 threshold, chosen for pairs)"))
    top_k: int = Field(5, ge=1, le=100)
    photo_evidence: bool = Field(True, description="answer copies of enrolled photos (photo evidence, beside face evidence)")
    photo_threshold: float = Field(PHOTO_THRESHOLD, ge=-1.0, le=1.0, description="photo-descriptor similarity from which a photo is a copy")
    retention_days: float | None = Field(None, gt=0, description=(
        "source material (face crops, photo thumbnails and descriptors) older than this is purged; the embeddings stay"))
    retention_expire_persons: bool = Field(False, description="with retention_days: a person whose newest face is that old is deleted entirely")
    retention_check_s: float = Field(3600.0, gt=0, description="how often the service looks for what retention purges")
    unknowns: bool = Field(False, description="keep the faces /identify answered as unknown, to group them and enrol them (GET /unknowns)")
    unknowns_retention_days: float = Field(7.0, gt=0, description="how long unknown faces are kept")
    unknowns_min_quality: float = Field(0.5, ge=0.0, le=1.0, description="the face quality from which an unknown face is worth keeping")
    max_faces: int = Field(10, ge=1, le=100)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=10_000)
    max_image_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1 << 20, description=(
        "memory an image may take once decoded (pixels × bytes Pillow keeps per pixel), checked from its header"))
    max_images_per_enroll: int = Field(20, ge=1)
    detect_max_side: int = Field(DECODE_MAX_SIDE, ge=160, description=(
        "photos are decoded at most this many pixels on a side, a large JPEG at between half this and this (DCT scaling); "
        "faces are cut from that, detection runs on a copy of at most 384 px (so by default nothing is decoded at more than "
        "twice what detection uses); boxes stay in the photo's own pixels"))
    max_pending: int = Field(16, ge=1, description="photos waiting for detection; past this, 503 with Retry-After")
    request_timeout_s: float = Field(30.0, gt=0, description="a request's face work past this answers 503")
    batch_size: int = Field(32, ge=1, le=512, description="faces per embedder batch")
    detect_processes: int | None = Field(None, ge=0, description=(
        "worker processes that detect photos arriving together on the CPU, started when two first do "
        "(0: detect in the serving process only; default: one per core where there are two or more)"))
    max_connections: int = Field(1000, ge=1, description="open connections; past this a new one gets 503 (capped below the process's file limit)")
    header_timeout_s: float = Field(10.0, gt=0, description="a request's head (line and headers) must arrive within this, else 408")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="a request head over this gets 431")
    min_body_rate: float = Field(8 * 1024, ge=0, description="bytes/s a request body must average once body_grace_s has passed, else the connection closes")
    body_grace_s: float = Field(10.0, ge=0, description="how long a request body may take before min_body_rate applies")
    index: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="flat: exact; ivf: approximate for large galleries (exact below 50k faces); hnsw: approximate")
    hnsw_m: int = Field(DEFAULT_HNSW_M, ge=4, le=128)
    hnsw_ef_search: int = Field(DEFAULT_EF_SEARCH, ge=8, description="HNSW search breadth: recall against speed")
    ivf_nprobe: int = Field(DEFAULT_IVF_NPROBE, ge=1, le=4096, description="IVF cells searched per query: recall against speed")

    @field_validator("api_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("FACEID_API_KEY must be at least 16 characters")
        return value

    @field_validator("store")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("FACEID_STORE must be a postgresql:// URL (unset it for the SQLite store in FACEID_DATA_DIR)")
        return value

    def store_password(self) -> str | None:
        """The database password from store_password_file, if one is named."""
        if self.store_password_file is None:
            return None
        try:
            return self.store_password_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"FACEID_STORE_PASSWORD_FILE {self.store_password_file}: {exc.strerror}") from exc

    def store_location(self) -> str:
        """Where the gallery's store is: the PostgreSQL URL, or the data folder (SQLite)."""
        return self.store.get_secret_value() if self.store is not None else str(self.data_dir)

    def sealer(self) -> Sealer:
        """The keys of encryption_key_file (none: values are stored as they are)."""
        return Sealer.from_file(self.encryption_key_file)

    def index_settings(self) -> IndexSettings:
        return IndexSettings(self.index, self.hnsw_m, self.hnsw_ef_search, self.ivf_nprobe)

    def pair_threshold(self) -> float:
        """The 1:1 threshold /verify uses when a request gives none; resolved by the lifespan."""
        if self.verify_threshold is None:
            raise RuntimeError("the 1:1 threshold is resolved by the app's lifespan before any request")
        return self.verify_threshold

    def answer_threshold(self) -> float:
        """The threshold answers use when a request gives none; the app's lifespan fills in the
        model's own default before the first request."""
        if self.threshold is None:
            raise RuntimeError("the threshold is resolved by the app's lifespan before any request")
        return self.threshold

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.max_connections, self.header_timeout_s, self.max_header_bytes, self.min_body_rate, self.body_grace_s)

    def detect_workers(self) -> int:
        """Detection processes for photos side by side on the CPU (app/detector_pool.py)."""
        if self.detect_processes is not None:
            return self.detect_processes
        from core.device import cpu_cores

        return cpu_cores() if cpu_cores() > 1 else 0

    def resolved_device(self) -> str:
        # Imported here: torch loads only when a model is about to.
        from core.device import resolve_device

        return resolve_device(self.device)
