"""The architecture, checked from the imports: core at the bottom, app/training/evaluation on
it (app and training never importing each other), the faceid command on top."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "app", "training", "evaluation", "faceid")
# What each package may import of the project's packages (itself always).
ALLOWED = {
    "core": set(),
    "app": {"core"},
    "evaluation": {"core"},
    "training": {"core", "evaluation"},  # evaluation validates every epoch
    "faceid": {"core", "app", "training", "evaluation"},
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


def test_models_folder_holds_no_code():
    assert not list((ROOT / "models").rglob("*.py"))


def test_dataset_layout_loads_no_torch():
    code = "import sys, core.dataset, core.model_card, core.paths, core.constants; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_the_command_answers_help_without_torch():
    code = ("import sys, contextlib, io\nfrom faceid.cli import build_parser\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['serve', '--help'], ['evaluate', '--help']):\n"
            "        try:\n            build_parser().parse_args(argv)\n        except SystemExit:\n            pass\n"
            "print('torch' in sys.modules, 'fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert out.stdout.strip() == "False False"
