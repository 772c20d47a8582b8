"""The install is the one CI tested: `make install` installs requirements.lock and nothing else,
and the lock still satisfies every requirement pyproject.toml states."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("convert", "train", "dev")  # the ones `make install` installs (Makefile's LOCK_EXTRAS)
INSTALLERS = {"pip", "setuptools", "wheel"}  # `pip freeze` leaves these out


def pins() -> dict[str, str]:
    """name → version of every requirement in the lock; each one must carry hashes."""
    text = (ROOT / "requirements.lock").read_text()
    found = {}
    for block in re.split(r"\n(?=\S)", text):
        if m := re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\;]+)", block):
            assert "--hash=sha256:" in block, f"{m.group(1)} is pinned without a hash"
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def test_the_makefile_installs_the_lock_and_only_it():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile and "LOCK := requirements.lock" in makefile
    assert all(f"--extra {e}" in makefile for e in EXTRAS)


def test_the_environment_holds_exactly_what_the_lock_pins():
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    installed = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        assert sep, f"not installed from a pinned release: {line}"
        installed[canonicalize_name(name)] = version
    locked = {k: v for k, v in pins().items() if k not in INSTALLERS}
    assert {k: v for k, v in installed.items() if locked.get(k) != v} == {}, "installed, but not so in the lock"
    assert {k: v for k, v in locked.items() if installed.get(k) != v} == {}, "pinned in the lock but not installed"


def test_the_lock_satisfies_every_requirement_of_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    locked = pins()
    versions = {r.name: locked.get(canonicalize_name(r.name)) for r in wanted}
    unmet = [str(r) for r in wanted if versions[r.name] is None or not r.specifier.contains(Version(versions[r.name]), prereleases=True)]
    assert unmet == [], "pyproject.toml asks for these; run `make lock`"
