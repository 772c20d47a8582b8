"""Deployment files: the compose file validates without a Docker engine; the Dockerfile is sane."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed; .ci/run installs it")
def test_compose_file_validates():
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"api", "train"}


def test_dockerfile_runs_non_root_with_healthcheck_and_build_time_weights():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2  # multi-stage
    assert "USER faceid" in text and "HEALTHCHECK" in text and "RUN faceid weights" in text
