"""A whole photo's descriptor: what stays the same when a copy of it is blurred, fogged, darkened,
noised, rained on, down-sized or glared.

The photo is reduced to a THUMB_SIDE² grey thumbnail (box-averaged, which also averages noise and
rain streaks away); its gradients are divided by their local RMS (over an 11-px window), so a
smooth change of brightness or contrast (fog, dark, the falloff of a glare) scales them but does
not turn them; pixels blown out to white carry nothing and are masked. Two photos are compared
by the correlation of their gradient fields over the pixels valid in both, shrunk where that
shared part is small (a glared copy keeps little, and a little agrees by chance). Measured on
the validation people's FACECOM photos (docs/photo-evidence.md).

Search and the exact similarity mask differently. The projected vectors (stored per enrolled
photo) mask the blown pixels' neighbours too, as they always have: changing that would change
every stored vector. The exact similarity, made from thumbnails at query time, masks the blown
pixels alone: the band beside the glare is much of what a glared copy keeps.

For search, a descriptor is also projected to PROJECTED_DIM values by a fixed random Gaussian
matrix (inner products kept to about 1/√256): FAISS finds a shortlist with it, and the exact
similarity re-ranks the shortlist from the stored thumbnails. A thumbnail is 4 KB, the projected
vector 1 KB.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

THUMB_SIDE = 64
PROJECTED_DIM = 256
SATURATED = 245  # grey level from which a thumbnail pixel counts as blown out
# Pixels beside blown ones masked too (rings of 4-neighbours): 1 for the stored, projected vectors,
# 0 for the exact similarity. On the validation people's gallery, masking that ring in the exact
# similarity left 3 glared copies under the threshold and named 2 of 12,112 stranger photos;
# without it, 2 and 1 (docs/photo-evidence.md).
SEARCH_GROW = 1
EXACT_GROW = 0
WINDOW = 11  # pixels over which a gradient's local RMS is taken
FLOOR = 16.0  # added to the local gradient energy: flat regions stay flat instead of amplified noise
HEAD_SUPPORT = 0.6  # the head's part counts when at least this share of it is valid in both photos
SHRINK = 0.1  # a shared part of f of the pixels keeps f / (f + SHRINK) of the correlation (times 1 + SHRINK)


@cache
def _box_matrix() -> np.ndarray:
    """B with B·x·Bᵀ the mean over each pixel's WINDOW² neighbourhood, borders mirrored (scipy's
    uniform_filter 'reflect'): two small matrix products, faster than the filter for a re-rank's
    dozen thumbnails."""
    half, n = WINDOW // 2, THUMB_SIDE
    box = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for k in range(i - half, i + half + 1):
            box[i, -k - 1 if k < 0 else 2 * n - k - 1 if k >= n else k] += 1 / WINDOW
    return box


def thumbnail(img: Image.Image) -> np.ndarray:
    """uint8 THUMB_SIDE×THUMB_SIDE grey thumbnail of a photo (any size or aspect: both are squashed)."""
    return np.asarray(img.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX), dtype=np.uint8)


# (float32 gradient field, flattened, zero where masked; bool mask of the valid entries)
Descriptor = tuple[np.ndarray, np.ndarray]


def describe(thumb: np.ndarray, grow: int = SEARCH_GROW) -> Descriptor:
    """(float32 gradient field, flattened, zero where masked; bool mask of the valid entries)."""
    fields, masks = describe_many(thumb[None], grow)
    return fields[0], masks[0]


def describe_many(thumbs: np.ndarray, grow: int = SEARCH_GROW) -> tuple[np.ndarray, np.ndarray]:
    """`describe` for N×THUMB_SIDE×THUMB_SIDE thumbnails at once: (N×D fields, N×D masks).
    `grow`: rings of neighbours of blown pixels masked too (SEARCH_GROW, EXACT_GROW)."""
    n = len(thumbs)
    grey = thumbs.astype(np.float32)
    blown = grey >= SATURATED
    for _ in range(grow):
        blown = blown | np.roll(blown, 1, 1) | np.roll(blown, -1, 1) | np.roll(blown, 1, 2) | np.roll(blown, -1, 2)
    valid = ~blown
    valid_f = valid.astype(np.float32)
    field = np.zeros((n, 2, THUMB_SIDE, THUMB_SIDE), dtype=np.float32)  # (x, y) central differences
    np.subtract(grey[:, :, 2:], grey[:, :, :-2], out=field[:, 0, :, 1:-1])
    np.subtract(grey[:, 2:], grey[:, :-2], out=field[:, 1, 1:-1])
    box = _box_matrix()
    both = np.concatenate([valid_f, (field * field).sum(1) * valid_f])  # both local means in one pass
    local = box @ (both.reshape(-1, THUMB_SIDE) @ box.T).reshape(both.shape)  # rows as one product, then columns
    coverage = np.maximum(local[:n], 1e-3)
    field *= (valid_f / np.sqrt(local[n:] / coverage + FLOOR))[:, None]
    # Centred over the valid entries (the others are zero, and stay zero).
    mean = field.sum((1, 2, 3)) / np.maximum(2 * valid_f.sum((1, 2)), 1)
    field -= mean[:, None, None, None] * valid_f[:, None]
    mask = np.ascontiguousarray(np.broadcast_to(valid[:, None], field.shape)).reshape(n, -1)
    return field.reshape(n, -1), mask


def _correlation(q: np.ndarray, q_valid: np.ndarray, fields: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Correlation of q with each field (N×D) over the entries valid in both, shrunk where that
    is a small share. q and the fields are zero where they are not valid, so each sum over the
    shared entries is one matrix-vector product (no N×D temporaries but fields²)."""
    q_valid_f = q_valid.astype(np.float32)
    valid_f = valid.astype(np.float32)
    cross = fields @ q
    q_energy = valid_f @ (q * q)
    f_energy = (fields * fields) @ q_valid_f
    corr = cross / (np.sqrt(q_energy * f_energy) + 1e-9)
    shared = valid_f @ q_valid_f / q.shape[0]
    return corr * shared / (shared + SHRINK) * (1 + SHRINK)


def head_regions(boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """bool N×D masks of the descriptor entries inside each face box (fractions of the photo)
    grown by a third each way: the head, hair and ears."""
    x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    gx, gy = (x2 - x1) / 3, (y2 - y1) / 3
    cols = np.arange(THUMB_SIDE) + 0.5
    inside_x = (cols >= ((x1 - gx) * THUMB_SIDE)[:, None]) & (cols <= ((x2 + gx) * THUMB_SIDE)[:, None])
    inside_y = (cols >= ((y1 - gy) * THUMB_SIDE)[:, None]) & (cols <= ((y2 + gy) * THUMB_SIDE)[:, None])
    region = inside_y[:, :, None] & inside_x[:, None, :]
    return np.repeat(region[:, None], 2, axis=1).reshape(len(region), -1)


def similarity(query: tuple[np.ndarray, np.ndarray], gallery: tuple[np.ndarray, np.ndarray],
               boxes: list[tuple[float, float, float, float]] | None = None) -> np.ndarray:
    """The query's similarity to each of N gallery descriptors (`describe_many`'s pair), in [-1, 1].
    With each gallery photo's face box, the head's part must agree too where enough of it is left
    (the smaller of the two counts): two people framed alike before the same backdrop are two
    photos, though most of their pixels agree. Where glare has taken the head, the rest decides."""
    q, q_mask = query
    fields, masks = gallery
    if not len(fields):
        return np.zeros(0, dtype=np.float32)
    whole = _correlation(q, q_mask, fields, masks)
    if boxes is not None:
        regions = head_regions(boxes)
        in_head = masks & regions
        checked = in_head @ q_mask.astype(np.float32) >= HEAD_SUPPORT * regions.sum(1)
        if checked.any():  # one pass over the photos whose head is left in both
            head = _correlation(q, q_mask, fields[checked] * regions[checked], in_head[checked])
            whole[checked] = np.minimum(whole[checked], head)
    return whole.astype(np.float32)


@cache
def _projection() -> np.ndarray:
    """The fixed random Gaussian projection (the same in every process: seeded)."""
    rng = np.random.default_rng(20261202)
    return (rng.standard_normal((2 * THUMB_SIDE * THUMB_SIDE, PROJECTED_DIM)) / np.sqrt(PROJECTED_DIM)).astype(np.float32)


def projected(field: np.ndarray) -> np.ndarray:
    """float32 PROJECTED_DIM unit vector of a descriptor's field, for FAISS's shortlist."""
    v = field @ _projection()
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


# From this similarity a photo is taken for a copy of an enrolled one (docs/photo-evidence.md).
PHOTO_THRESHOLD = 0.50
# Photos FAISS hands to the exact similarity (glared queries: WIDER times as many): 8 found every
# copy 12 did on both held-out splits, 0.4 ms sooner at 100k photos (docs/photo-evidence.md).
SHORTLIST = 8


GLARED = 0.5  # a query with less than this share of its pixels left is searched WIDER
WIDER = 4


def search_breadth(query: Descriptor) -> int:
    """How many times wider than usual to search for a query's photo (shortlist, and IVF cells or
    HNSW candidates): WIDER where glare left less than GLARED of it, else 1. Such a query's
    projected vector holds little of the photo: at 100k photos the usual search found the own photo
    of 65.5% of the validation people's sunny copies, the wider one 80.2% (benchmarks/photo_evidence.py)."""
    return WIDER if float(query[1].mean()) < GLARED else 1


def rerank(query: np.ndarray, thumbs: list[np.ndarray], boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """The exact similarity of the query (its thumbnail) to each shortlisted photo (its thumbnail
    and face box), all described at EXACT_GROW in one pass."""
    if not thumbs:
        return np.zeros(0, dtype=np.float32)
    fields, masks = describe_many(np.stack([query, *thumbs]), EXACT_GROW)
    return similarity((fields[0], masks[0]), (fields[1:], masks[1:]), boxes)
