"""`faceid evaluate` end to end on a tiny FACECOM-layout folder, and its caches."""

import json
import shutil

from core.data.crop_cache import DetectionCache, face_crops
from core.faces.pipeline import PipelineConfig, load_pipeline
from faceid.cli import main


def test_evaluate_writes_report_and_plots(facecom_dir, tmp_path, capsys):
    report_path, plots = tmp_path / "r.json", tmp_path / "plots"
    code = main(["evaluate", "--data", str(facecom_dir), "--weights", "casia-webface", "--report", str(report_path),
                 "--plots", str(plots), "--cache", str(tmp_path / "cache")])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["n_identities"] == 6 and report["n_queries"] == 21
    assert set(report["per_distortion"]) == {"blurred", "lowlight", "resized"}
    assert 0.0 <= report["top1"] <= 1.0 and report["top1"] > 0.5  # six distinct people, mild distortions
    assert sum(report["detection"]["counts"].values()) == 28
    for key in ("macro_f1", "verification", "source_left_out", "clean_verification"):
        assert key in report
    assert set(report["detection_recall"]) == {"blurred", "lowlight", "resized"}
    assert report["open_set"]["overall"]["n"] == 21 and 0 <= report["open_set"]["overall"]["named_correctly"] <= 1
    by_quality = report["open_set"]["by_quality"]
    assert by_quality["flagged"]["n"] + by_quality["not_flagged"]["n"] <= 21
    assert report["verification"]["n_genuine"] == 21
    assert sum(b["n"] for b in report["face_left"].values()) == 21  # every query in one blown-out bin
    assert sorted(p.name for p in plots.iterdir()) == ["per_distortion.png", "similarity_matrix.png", "tsne.png"]
    guard = report["clean_guard"]  # the model is its own baseline here: same TAR, no difference
    assert guard["baseline"] == report["model_id"] and guard["tar"] == report["clean_verification"]["tar@far=0.001"]
    assert guard["difference"] == 0.0
    assert "top-1" in capsys.readouterr().out


def test_evaluate_guards_clean_verification_against_another_backbone(facecom_dir, tmp_path, capsys):
    """`--baseline` embeds the same clean photos with the other backbone; the report holds both
    TARs and their paired difference, and the summary prints them."""
    import torch

    from core.models.backbone import build_backbone, load_state, resolve_weights

    state = build_backbone(load_state(*resolve_weights("casia-webface"))).state_dict()
    torch.manual_seed(0)
    state = {k: v + 0.05 * v.std() * torch.randn_like(v) if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
    other = tmp_path / "perturbed.pt"
    torch.save(state, other)
    report_path = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(facecom_dir), "--weights", "casia-webface", "--baseline", str(other), "--runtime", "torch",
                 "--no-photo-evidence", "--report", str(report_path), "--cache", str(tmp_path / "cache")]) == 0
    guard = json.loads(report_path.read_text())["clean_guard"]
    assert guard["baseline"].startswith("perturbed@") and guard["people"] == 6 and guard["genuine_pairs"] == 1
    assert guard["difference"] == guard["tar"] - guard["baseline_tar"]
    assert "clean TAR@FAR=0.001" in capsys.readouterr().out


def test_evaluate_names_a_bad_folder(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "nope"), "--report", str(tmp_path / "r.json")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err


def test_detection_cache_follows_file_content(facecom_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(facecom_dir, data)
    path = data / "person_1" / "person_1_0001.jpg"
    pipeline = load_pipeline(PipelineConfig())
    cache_dir = tmp_path / "cache"
    face_crops([path], pipeline, cache_dir, progress=False)
    assert len(DetectionCache(cache_dir, pipeline).entries) == 1
    face_crops([path], pipeline, cache_dir, progress=False)  # unchanged file: served from the cache
    assert len(DetectionCache(cache_dir, pipeline).entries) == 1
    shutil.copy(data / "person_2" / "person_2_0001.jpg", path)  # new content under the same name
    face_crops([path], pipeline, cache_dir, progress=False)
    assert len(DetectionCache(cache_dir, pipeline).entries) == 2
    # Another pipeline configuration never reads these detections.
    assert DetectionCache(cache_dir, load_pipeline(PipelineConfig(margin=10))).entries == {}


def test_evaluate_embeds_with_the_runtime_asked_for(facecom_dir, tmp_path, monkeypatch):
    """`--runtime` reaches the embedder (as FACEID_RUNTIME does in the service) and the report."""
    import core.embedding.runtime

    asked = []
    real = core.embedding.runtime.make_embedder

    def spy(backbone, device, batch_size=32, runtime="auto"):
        asked.append(runtime)
        return real(backbone, device, batch_size, runtime="torch")

    monkeypatch.setattr("evaluation.evaluate.make_embedder", spy)
    report_path = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(facecom_dir), "--weights", "casia-webface", "--report", str(report_path),
                 "--cache", str(tmp_path / "cache"), "--runtime", "onnx-int8"]) == 0
    assert asked == ["onnx-int8"] and json.loads(report_path.read_text())["runtime"] == "torch"  # what embedded: the spy's


def test_evaluate_names_a_bad_baseline_before_any_work(facecom_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["evaluate", "--data", str(facecom_dir), "--weights", "casia-webface", "--baseline", str(tmp_path / "nope.pt"),
                 "--report", str(tmp_path / "r.json"), "--cache", str(cache)]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert not cache.exists()  # nothing was detected or embedded first


def test_distractors_join_the_gallery_only(facecom_dir, tmp_path, capsys):
    """`--distractors`: other people's clean photos enlarge the gallery. They are never queried, and
    clean verification stays the evaluated people's. A distractor whose photo is a copy of a query
    takes that query's top-1, so the larger gallery is really searched."""
    data = tmp_path / "data"
    shutil.copytree(facecom_dir, data)
    twin = data / "twin"
    twin.mkdir()
    shutil.copy(data / "person_1" / "distortion" / "person_1_0001_blurred.jpg", twin / "twin_0001.jpg")
    evaluated, others = tmp_path / "evaluated.txt", tmp_path / "others.txt"
    evaluated.write_text("# evaluated\nperson_0\nperson_1\nperson_2\n")
    others.write_text("person_3\nperson_4\nperson_5\ntwin\n")
    common = ["evaluate", "--data", str(data), "--weights", "casia-webface", "--split", str(evaluated), "--runtime", "torch",
              "--cache", str(tmp_path / "cache")]
    alone, pooled = tmp_path / "alone.json", tmp_path / "pooled.json"
    assert main([*common, "--report", str(alone)]) == 0
    assert main([*common, "--distractors", str(others), "--report", str(pooled)]) == 0
    a, p = json.loads(alone.read_text()), json.loads(pooled.read_text())
    assert a["n_queries"] == p["n_queries"] == 12 and p["open_set"]["overall"]["n"] == 12  # person_0 has two clean photos
    assert (a["n_identities"], p["n_identities"]) == (3, 7)
    assert p["distractors"] == {"split": "others.txt", "people": 4, "photos": 4}
    assert p["clean_verification"] == a["clean_verification"] and p["clean_guard"]["people"] == 3
    assert a["per_distortion"]["blurred"] > p["per_distortion"]["blurred"]  # person_1's blurred copy now finds its twin
    assert "(4 of them distractors)" in capsys.readouterr().out


def test_distractors_must_be_other_people(facecom_dir, tmp_path, capsys):
    both = tmp_path / "both.txt"
    both.write_text("person_0\nperson_1\n")
    assert main(["evaluate", "--data", str(facecom_dir), "--split", str(both), "--distractors", str(both),
                 "--report", str(tmp_path / "r.json"), "--cache", str(tmp_path / "cache")]) == 2
    assert "person_0" in capsys.readouterr().err and not (tmp_path / "cache").exists()
