"""Deployment files, checked for what they do: the compose file resolves, the Docker build
context holds every part of the package the image installs, and the image runs as non-root
with a health check on /readyz. (No engine here: the image itself is not built.)"""

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for op, args in instructions():
        if op == "FROM":
            out.append([])
        out[-1].append((op, args))
    return out


def dockerignored(rel: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
               for pattern in patterns for prefix in prefixes)


def package_dirs() -> list[str]:
    """The folders the wheel is built from (pyproject's packages, with their package-dir mapping)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools.get("package-dir", {})
    return sorted({mapping.get(p, p.replace(".", "/")).split("/")[0] for p in setuptools["packages"]})


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed; .ci/run installs it")
def test_compose_file_validates():
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"api", "train", "postgres", "api-1", "api-2", "api-3", "lb"}


def test_build_context_and_copies_hold_the_whole_package():
    builder = stages()[0]
    copied = {src for op, args in builder if op == "COPY" and "--from" not in args for src in shlex.split(args)[:-1]}
    needed = set(package_dirs()) | {"pyproject.toml", "README.md", "LICENSE", "requirements.lock"}
    assert needed <= copied, f"the builder does not copy {sorted(needed - copied)}"
    shipped = [str(p.relative_to(ROOT)) for p in (ROOT / "models" / "facecom-ft").iterdir()]
    for rel in sorted(needed) + shipped:
        assert (ROOT / rel).exists(), rel
        assert not dockerignored(rel), f"{rel} is excluded from the build context by .dockerignore"
    assert dockerignored("models/pretrained/casia-webface.pt") and dockerignored(".venv/bin/python")


def test_builder_installs_the_lock_then_the_wheel_and_runtime_needs_no_source():
    builder, runtime = stages()[0], stages()[-1]
    installs = [shlex.split(args) for op, args in builder if op == "RUN" and shlex.split(args)[:2] == ["pip", "install"]]
    # The lock first, exactly (the install `make install` makes and CI tests), then the project alone.
    assert installs[0] == ["pip", "install", "--require-hashes", "--no-deps", "-r", "requirements.lock"]
    assert all("--no-deps" in argv for argv in installs) and "-e" not in installs[-1] and "." in installs[-1]
    assert [args for op, args in runtime if op == "COPY"] == ["--from=builder /opt/venv /opt/venv"]


def test_runtime_is_non_root_and_checks_readiness():
    runtime = stages()[-1]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    (health,) = [args for op, args in runtime if op == "HEALTHCHECK"]
    assert health.split(" CMD ", 1)[1] == '["faceid", "probe"]'
    (cmd,) = [args for op, args in runtime if op == "CMD"]
    assert cmd.startswith('["faceid", "serve"')


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def train_script() -> str:
    """The train job's shell script as the container's shell gets it (compose turns $$ into $)."""
    command = compose()["services"]["train"]["command"]
    assert command[:2] == ["sh", "-c"]
    return command[2].replace("$$", "$")


def mount(volume: str) -> tuple[str, str]:
    """(target, source) of a short-syntax volume; the source may hold a ${VAR:-default} with a colon."""
    parts = volume.split(":")
    if parts[-1] in {"ro", "rw"}:
        parts = parts[:-1]
    return parts[-1], ":".join(parts[:-1])


def test_the_train_job_takes_its_data_from_a_variable_and_runs_the_packaged_schedule():
    train = compose()["services"]["train"]
    mounts = dict(mount(volume) for volume in train["volumes"])
    assert mounts["/data/train"].startswith("${FACEID_TRAIN_DATA")  # the host folder is the user's
    assert train["environment"]["FACEID_TRAIN_DATA"] == "${FACEID_TRAIN_DATA:-}"
    argv = shlex.split(train_script().split("exec ", 1)[1])
    assert argv[:3] == ["faceid", "train", "all"]  # the schedule that made the shipped model, and its export
    options = dict(zip(argv[3::2], argv[4::2]))
    assert options["--data"] == "/data/train"
    assert Path(options["--out"]).parent.as_posix() in mounts and Path(options["--out"]).name == "facecom-ft"
    assert mounts[Path(options["--out"]).parent.as_posix()] == "models"  # the named volume the api can serve


def test_the_train_job_refuses_to_start_without_its_data(tmp_path):
    unset = subprocess.run(["sh", "-c", train_script()], capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ["PATH"]})
    assert unset.returncode == 2 and "set FACEID_TRAIN_DATA" in unset.stderr
    # Set, but pointing at a folder with no data set: faceid names it (here /data/train is absent).
    bin_dir = str(Path(sys.executable).parent)
    empty = subprocess.run(["sh", "-c", train_script()], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FACEID_TRAIN_DATA": str(tmp_path)})
    assert empty.returncode == 2 and "/data/train" in empty.stderr and "error" in empty.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed; .ci/run installs it")
def test_compose_resolves_the_training_data_variable(tmp_path):
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "train", "config"],
                         capture_output=True, text=True, timeout=60, env=os.environ | {"FACEID_TRAIN_DATA": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    train = yaml.safe_load(out.stdout)["services"]["train"]
    assert f"{tmp_path}:/data/train:ro" in train["volumes"] and train["environment"]["FACEID_TRAIN_DATA"] == str(tmp_path)


def test_the_cluster_profile_runs_replicas_on_one_postgres_behind_a_load_balancer_from_the_repo():
    services = compose()["services"]
    cluster = {name for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    replicas = sorted(n for n in cluster if n.startswith("api-"))
    assert cluster == {"postgres", "lb", *replicas} and len(replicas) >= 2
    assert "pgvector" in services["postgres"]["image"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    secret = compose()["secrets"]["pg_password"]["file"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    for name in replicas:
        env = services[name]["environment"]
        url = env["FACEID_STORE"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
        assert ":" not in url.split("://", 1)[1].split("@", 1)[0], "no password in the URL"
        assert "sslmode=" in url and env["FACEID_STORE_PASSWORD_FILE"] == "/run/secrets/pg_password"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["healthcheck"]["test"] == ["CMD", "faceid", "probe"]
        assert len(services[name]["volumes"]) == 1  # its own snapshot cache, no shared state
    assert len({services[n]["volumes"][0] for n in replicas}) == len(replicas)
    for name in ("postgres", "lb"):
        assert services[name]["healthcheck"]["test"]
    lb = services["lb"]
    (mount,) = lb["volumes"]
    conf = ROOT / mount.split(":")[0]
    assert conf.is_file() and mount.split(":")[1] == "/etc/nginx/nginx.conf"
    text = conf.read_text()
    assert sorted(line.split()[1].split(":")[0] for line in text.splitlines() if line.strip().startswith("server ") and ":8000" in line) == replicas
    assert "proxy_request_buffering on" in text and "client_max_body_size" in text
    assert set(lb["depends_on"]) == set(replicas)
    assert (ROOT / secret).parent.is_dir() and not (ROOT / secret).exists(), "the password file is made on the host, never committed"


def test_the_settings_never_show_the_database_password():
    from app.config import Settings
    from app.gallery.postgres import redacted

    url = "postgresql://faceid:hunter2@db.example:5432/faceid?sslmode=verify-full"
    settings = Settings(store=url)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert redacted(url) == "postgresql://faceid@db.example:5432/faceid"
    with pytest.raises(ValueError, match="postgresql://"):
        Settings(store="mysql://x")
