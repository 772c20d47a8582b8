"""The architecture, checked from the imports: core at the bottom (and inside it, the flow's
order), app/training/evaluation on it (app and training never importing each other), the
faceid command on top, benchmarks beside it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "app", "training", "evaluation", "faceid", "benchmarks")
# What each package may import of the project's packages (itself always).
ALLOWED = {
    "core": set(),
    "app": {"core"},
    "evaluation": {"core"},
    "training": {"core", "evaluation"},  # evaluation validates every epoch
    "faceid": {"core", "app", "training", "evaluation"},
    "benchmarks": {"core", "app", "evaluation"},
}
# Inside core: the root modules (decode, pixels, files, device, paths, errors) import no
# sub-package; models stand alone; faces need only the root; embedding takes faces (int8
# calibration) and models; data sets take faces (their crops).
CORE_ALLOWED = {
    "root": set(),
    "models": set(),
    "faces": set(),
    "embedding": {"faces", "models"},
    "data": {"faces"},
    "photos": set(),  # the whole photo: pixels alone
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def project_imports(package: str) -> dict[str, set[str]]:
    """Module file → the project packages it imports."""
    return {
        str(path.relative_to(ROOT)): {m.split(".")[0] for m in imported_modules(path)} & set(PACKAGES)
        for path in (ROOT / package).rglob("*.py")
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below(package):
    offending = {f: sorted(imports - ALLOWED[package] - {package}) for f, imports in project_imports(package).items()}
    assert {f: bad for f, bad in offending.items() if bad} == {}


def core_part(path: Path) -> str:
    rel = path.relative_to(ROOT / "core")
    return rel.parts[0] if len(rel.parts) > 1 else "root"


def test_inside_core_the_flow_only_runs_forward():
    assert set(CORE_ALLOWED) == {"root"} | {p.name for p in (ROOT / "core").iterdir() if (p / "__init__.py").is_file()}
    offending = {}
    for path in (ROOT / "core").rglob("*.py"):
        part = core_part(path)
        used = {m.split(".")[1] for m in imported_modules(path) if m.startswith("core.") and m.split(".")[1] in CORE_ALLOWED}
        if bad := used - CORE_ALLOWED[part] - {part}:
            offending[str(path.relative_to(ROOT))] = sorted(bad)
    assert offending == {}


def test_models_folder_holds_no_code():
    assert not list((ROOT / "models").rglob("*.py"))


def test_dataset_layout_loads_no_torch():
    code = "import sys, core.data.dataset, core.models.model_card, core.paths, core.constants, core.device; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_the_command_answers_help_without_torch():
    code = ("import sys, contextlib, io\nfrom faceid.cli import build_parser\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['serve', '--help'], ['evaluate', '--help']):\n"
            "        try:\n            build_parser().parse_args(argv)\n        except SystemExit:\n            pass\n"
            "print('torch' in sys.modules, 'fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert out.stdout.strip() == "False False"
