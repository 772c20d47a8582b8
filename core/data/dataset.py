"""Data sets on disk: people's photos in one of three layouts, read into one list of samples.

Accepted layouts (image files: .jpg, .jpeg, .png; other files are ignored):

1. FACECOM: `<person>/<photo>.jpg` clean, `<person>/distortion/<photo>_<kind>.jpg` distorted.
2. clean/distortion: `<person>/clean/<photo>.jpg`, `<person>/distortion/<photo>_<kind>.jpg`,
   optionally under `train/`, `val/` and `test/` (which are then read together).
3. gallery/queries: `gallery/<person>/*.jpg` enrolled photos, `queries/<person>/*.jpg` any
   other photos of the person (kind "query", made from no particular gallery photo).

A distorted photo names the clean photo it was made from, so evaluation can leave that
photo out of the gallery. No torch here: listing a data set must stay cheap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CLEAN = "clean"
QUERY = "query"
DISTORTION_DIR = "distortion"
SPLIT_DIRS = ("train", "val", "test")
GALLERY_DIR, QUERIES_DIR = "gallery", "queries"
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DEFAULT_VAL_SPLIT = SPLITS_DIR / "facecom_val_identities.txt"  # choices are made on these people
DEFAULT_TEST_SPLIT = SPLITS_DIR / "facecom_test_identities.txt"  # final figures, no choice made on them
DEFAULT_TRAIN_PEOPLE = SPLITS_DIR / "facecom_train_people.txt"  # every identity of FACECOM's training split (most are LFW people)
LAYOUT_HELP = (
    "expected <person>/<photo>.jpg with <person>/distortion/<photo>_<kind>.jpg (FACECOM), "
    "<person>/clean/ and <person>/distortion/ (optionally under train/ val/ test/), "
    "or gallery/<person>/ with queries/<person>/"
)


class LayoutError(ValueError):
    """A folder, or a file in it, that fits none of the accepted layouts."""


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    kind: str  # "clean", a distortion's name, or "query"
    source: str | None  # stem of the clean photo this image was made from; None if unknown

    @property
    def is_clean(self) -> bool:
        return self.kind == CLEAN


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_gallery_layout(root: Path) -> bool:
    return (root / GALLERY_DIR).is_dir()


def _split_roots(root: Path) -> list[Path] | None:
    """The train/val/test folders when the data set is split on disk, else None."""
    subdirs = _subdirs(root)
    if subdirs and all(d.name in SPLIT_DIRS for d in subdirs):
        return sorted(subdirs, key=lambda d: SPLIT_DIRS.index(d.name))
    return None


def _distorted(person: Path, stems: set[str]) -> list[Sample]:
    folder = person / DISTORTION_DIR
    samples = []
    for p in _images(folder) if folder.is_dir() else []:
        source, _, kind = p.stem.rpartition("_")
        if source not in stems:
            raise LayoutError(f"{p}: expected <clean-stem>_<kind> with a clean photo {source or p.stem}.* in {person}")
        samples.append(Sample(person.name, p, kind, source))
    return samples


def _person(person: Path) -> list[Sample]:
    """One person's folder in layout 1 or 2, clean photos first."""
    clean_dir = person / CLEAN if (person / CLEAN).is_dir() else person
    if clean_dir is not person and (stray := _images(person)):
        raise LayoutError(f"{stray[0]}: beside {person / CLEAN}/, photos belong in clean/ or {DISTORTION_DIR}/")
    for sub in _subdirs(person):
        if sub.name not in {CLEAN, DISTORTION_DIR} and _images(sub):
            raise LayoutError(f"{_images(sub)[0]}: unexpected folder {sub.name}/; {LAYOUT_HELP}")
    clean = [Sample(person.name, p, CLEAN, p.stem) for p in _images(clean_dir)]
    return clean + _distorted(person, {s.path.stem for s in clean})


def _gallery_queries(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    queries = root / QUERIES_DIR
    for person in _subdirs(root / GALLERY_DIR):
        samples += [Sample(person.name, p, CLEAN, p.stem) for p in _images(person)]
        if (queries / person.name).is_dir():
            samples += [Sample(person.name, p, QUERY, None) for p in _images(queries / person.name)]
    enrolled = {s.identity for s in samples}
    for person in _subdirs(queries) if queries.is_dir() else []:
        if person.name not in enrolled and (photos := _images(person)):
            raise LayoutError(f"{photos[0]}: a query of {person.name}, who has no photo in {root / GALLERY_DIR}")
    return samples


def _person_dirs(root: Path) -> list[Path]:
    if stray := _images(root):
        raise LayoutError(f"{stray[0]}: a photo outside any person's folder; {LAYOUT_HELP}")
    if (splits := _split_roots(root)) is not None:
        return [person for split in splits for person in _person_dirs(split)]
    return _subdirs(root)


def identities(root: Path) -> list[str]:
    """The people of a data set, sorted, without listing their photos."""
    root = _check_root(root)
    if _is_gallery_layout(root):
        return sorted(d.name for d in _subdirs(root / GALLERY_DIR))
    return sorted({d.name for d in _person_dirs(root)})


def scan(root: Path, only: set[str] | None = None) -> list[Sample]:
    """Every image of the data set (of the people in `only`, if given), clean first within
    each person; raises LayoutError naming the file or folder that fits no layout."""
    root = _check_root(root)
    if _is_gallery_layout(root):
        samples = [s for s in _gallery_queries(root) if only is None or s.identity in only]
    else:
        samples = [s for d in _person_dirs(root) if only is None or d.name in only for s in _person(d)]
    if not any(s.is_clean for s in samples):
        raise LayoutError(f"{root}: no clean photo found; {LAYOUT_HELP}")
    if only is not None and (missing := only - {s.identity for s in samples}):
        raise LayoutError(f"{root}: identities of the split not found, e.g. {sorted(missing)[:3]}")
    return samples


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    return root


def split_identities(root: Path, n_val: int, seed: int = 0, exclude: set[str] | None = None) -> list[str]:
    """A seeded choice of held-out identities (people the model is never trained on), drawn
    from those not in `exclude` (e.g. a test split drawn beside the validation split)."""
    ids = [i for i in identities(root) if i not in (exclude or set())]
    if n_val >= len(ids):
        raise LayoutError(f"{root}: {len(ids)} identities, cannot hold out {n_val}")
    return sorted(random.Random(seed).sample(ids, n_val))


def read_split(path: Path) -> set[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read split file ({exc.strerror})") from exc
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def write_split(path: Path, identities: list[str], header: str) -> None:
    Path(path).write_text(f"# {header}\n" + "\n".join(identities) + "\n")
