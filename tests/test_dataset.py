"""Data set layouts: each accepted layout is read from a small tree; anything else is named."""

from pathlib import Path

import pytest

from core.data.dataset import (
    LayoutError,
    identities,
    read_split,
    scan,
    split_identities,
    write_split,
)


def touch(root: Path, *paths: str) -> Path:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")  # listing never decodes
    return root


def as_tuples(samples):
    return [(s.identity, s.path.name, s.kind, s.source) for s in samples]


def test_scan_reads_clean_and_distorted(facecom_dir):
    samples = scan(facecom_dir)
    clean = [s for s in samples if s.is_clean]
    assert len(clean) == 7 and len(samples) == 7 * 4
    assert {s.kind for s in samples} == {"clean", "blurred", "lowlight", "resized"}
    blurred = next(s for s in samples if s.kind == "blurred" and s.identity == "person_0")
    assert blurred.source == "person_0_0001"


def test_facecom_layout(tmp_path):
    touch(tmp_path, "ada/ada_1.jpg", "ada/distortion/ada_1_noisy.jpg", "ada/notes.txt", "bob/bob_1.png")
    assert as_tuples(scan(tmp_path)) == [
        ("ada", "ada_1.jpg", "clean", "ada_1"), ("ada", "ada_1_noisy.jpg", "noisy", "ada_1"), ("bob", "bob_1.png", "clean", "bob_1"),
    ]


def test_clean_and_distortion_folders_under_splits(tmp_path):
    touch(tmp_path, "train/ada/clean/a.jpg", "train/ada/distortion/a_foggy.jpg", "val/bob/clean/b.jpg",
          "val/bob/distortion/b_rainy.jpg", "test/cy/clean/c.jpg")
    assert as_tuples(scan(tmp_path)) == [
        ("ada", "a.jpg", "clean", "a"), ("ada", "a_foggy.jpg", "foggy", "a"),
        ("bob", "b.jpg", "clean", "b"), ("bob", "b_rainy.jpg", "rainy", "b"), ("cy", "c.jpg", "clean", "c"),
    ]
    assert identities(tmp_path) == ["ada", "bob", "cy"]
    assert as_tuples(scan(tmp_path / "val")) == [("bob", "b.jpg", "clean", "b"), ("bob", "b_rainy.jpg", "rainy", "b")]


def test_gallery_and_queries(tmp_path):
    touch(tmp_path, "gallery/ada/id.jpg", "gallery/bob/id.jpg", "queries/ada/street.jpg", "queries/ada/party.jpg")
    assert as_tuples(scan(tmp_path)) == [
        ("ada", "id.jpg", "clean", "id"), ("ada", "party.jpg", "query", None), ("ada", "street.jpg", "query", None),
        ("bob", "id.jpg", "clean", "id"),
    ]
    assert identities(tmp_path) == ["ada", "bob"]
    assert {s.identity for s in scan(tmp_path, {"bob"})} == {"bob"}


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (["a.jpg"], "a.jpg"),  # a photo outside any person's folder
        (["p/x.jpg", "p/distortion/y_noisy.jpg"], "y_noisy.jpg"),  # a distortion of no clean photo
        (["p/clean/x.jpg", "p/stray.jpg"], "stray.jpg"),  # beside clean/
        (["p/x.jpg", "p/extra/z.jpg"], "z.jpg"),  # a folder no layout has
        (["gallery/ada/a.jpg", "queries/zed/q.jpg"], "q.jpg"),  # a query of nobody enrolled
    ],
)
def test_a_file_that_fits_no_layout_is_named(tmp_path, files, named):
    touch(tmp_path, *files)
    with pytest.raises(LayoutError, match=named):
        scan(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(LayoutError, match="no clean photo"):
        scan(tmp_path)
    with pytest.raises(LayoutError, match="not a folder"):
        scan(tmp_path / "missing")


def test_scan_subset_and_missing_identity(facecom_dir):
    assert {s.identity for s in scan(facecom_dir, {"person_1"})} == {"person_1"}
    with pytest.raises(LayoutError, match="not found"):
        scan(facecom_dir, {"person_1", "nobody"})


def test_split_is_seeded_and_round_trips(facecom_dir, tmp_path):
    a = split_identities(facecom_dir, 2, seed=3)
    assert a == split_identities(facecom_dir, 2, seed=3) and len(a) == 2
    write_split(tmp_path / "s.txt", a, "test")
    assert read_split(tmp_path / "s.txt") == set(a)
    with pytest.raises(LayoutError):
        split_identities(facecom_dir, 6)
