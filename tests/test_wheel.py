"""What a checkout does, an installed wheel does too: built, installed into a fresh virtual
environment and run away from the source tree, it finds the shipped model, the splits and
the training configs, and its server serves the shipped model by default."""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ANYWHERE = shutil.ignore_patterns("*.egg-info", "__pycache__")
AT_ROOT = {".git", ".venv", ".venv-lock", ".cache", "runs", "reports", "data", "build"}  # core/data is code: only the root's


def skip(folder: str, names: list[str]) -> set[str]:
    """What the copied source tree leaves out: caches and venvs, the gallery, the pretrained cache."""
    left = set(ANYWHERE(folder, names))
    if Path(folder) == ROOT:
        left |= AT_ROOT & set(names)
    if Path(folder) == ROOT / "models":
        left |= {"pretrained", "onnx"} & set(names)
    return left


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; dependencies come from this venv's site-packages,
    added as a plain path (its .pth files, the editable install's among them, are not run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=skip)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"), str(tmp / "src"))
    shutil.rmtree(tmp / "src")
    run(sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv"))
    python = tmp / "venv" / "bin" / "python"
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = (tmp / "dist").glob("faceid-*.whl")
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel))
    return tmp / "venv"


def in_venv(venv: Path, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "FACEID_MODELS_DIR"}}
    return run(str(venv / "bin" / "python"), "-c", code, cwd=venv.parent, env=env).stdout.strip()


def test_installed_package_is_not_the_checkout(installed):
    assert in_venv(installed, "import core; print(core.__file__)").startswith(str(installed))


def test_default_weights_are_the_packaged_shipped_model(installed):
    out = in_venv(installed, "from core.models.backbone import default_weights\nfrom core.models.thresholds import model_threshold\n"
                             "w = default_weights(); print(w, model_threshold(w))")
    weights, threshold = out.split()
    assert Path(weights).name == "facecom-ft" and weights.startswith(str(installed))
    assert 0.0 < float(threshold) < 1.0


def test_splits_and_training_configs_are_packaged(installed):
    code = ("from core.data.dataset import DEFAULT_VAL_SPLIT, read_split\nfrom training.config import CONFIGS_DIR, load_config\n"
            "print(len(read_split(DEFAULT_VAL_SPLIT)), load_config(CONFIGS_DIR / 'stage1.yaml').first_trainable, DEFAULT_VAL_SPLIT)")
    n_ids, first_trainable, split = in_venv(installed, code).split()
    assert int(n_ids) == 100 and first_trainable and split.startswith(str(installed))


def test_installed_command_evaluate_help(installed):
    out = run(str(installed / "bin" / "faceid"), "evaluate", "--help", cwd=installed.parent).stdout
    assert "--data" in out and "--weights" in out


def test_installed_server_serves_the_shipped_model(installed, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEID_")} | {"FACEID_DATA_DIR": str(tmp_path / "g"), "FACEID_DEVICE": "cpu"}
    proc = subprocess.Popen([str(installed / "bin" / "faceid"), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail(f"server did not come up:\n{proc.stdout.read() if proc.poll() is not None else ''}")
        assert ready.status_code == 200 and ready.json()["model_id"].startswith("facecom-ft@")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
