import pytest

from evaluation.facecom import LayoutError, read_split, scan, split_identities, write_split


def test_scan_reads_clean_and_distorted(facecom_dir):
    samples = scan(facecom_dir)
    clean = [s for s in samples if s.is_clean]
    assert len(clean) == 7 and len(samples) == 7 * 4
    assert {s.kind for s in samples} == {"clean", "blurred", "lowlight", "resized"}
    blurred = next(s for s in samples if s.kind == "blurred" and s.identity == "person_0")
    assert blurred.source == "person_0_0001"


def test_scan_subset_and_missing_identity(facecom_dir):
    assert {s.identity for s in scan(facecom_dir, {"person_1"})} == {"person_1"}
    with pytest.raises(LayoutError, match="not found"):
        scan(facecom_dir, {"person_1", "nobody"})


def test_folder_not_in_layout(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(LayoutError, match="FACECOM layout"):
        scan(tmp_path)
    with pytest.raises(LayoutError, match="not a folder"):
        scan(tmp_path / "missing")


def test_distorted_image_without_its_clean_photo(tmp_path):
    (tmp_path / "p" / "distortion").mkdir(parents=True)
    (tmp_path / "p" / "x.jpg").write_bytes(b"x")
    (tmp_path / "p" / "distortion" / "y_noisy.jpg").write_bytes(b"x")
    with pytest.raises(LayoutError, match="y_noisy"):
        scan(tmp_path)


def test_split_is_seeded_and_round_trips(facecom_dir, tmp_path):
    a = split_identities(facecom_dir, 2, seed=3)
    assert a == split_identities(facecom_dir, 2, seed=3) and len(a) == 2
    write_split(tmp_path / "s.txt", a, "test")
    assert read_split(tmp_path / "s.txt") == set(a)
    with pytest.raises(LayoutError):
        split_identities(facecom_dir, 6)
