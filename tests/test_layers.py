"""The architecture, checked from the imports: core at the bottom (and inside it, the flow's
order), app/training/evaluation on it (app and training never importing each other), the
faceid command on top, benchmarks beside it; inside app, routes over use cases over the engine
and the gallery; and no import circle between any two modules anywhere."""

import ast
import shutil
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


# Inside app, each part may import only the parts of the layers below it (never its own
# layer's other parts, never above): the vocabulary, the machinery, the settings, what builds
# parts from them and the HTTP plumbing, the use cases, what routes stand on, the routes, the app.
APP_LAYERS = (
    {"errors", "schemas"},  # the service's own errors; request and response bodies
    {"detector_pool"},  # detection in worker processes, for the engine's photos side by side
    {"engine", "gallery"},  # model work; the store and its indexes
    {"config"},  # typed settings, whose defaults come from the machinery
    {"wiring", "http"},  # settings become parts; connection limits, the guard, headers, metrics, uploads
    {"usecases"},  # identify, enrol, persons, bulk work
    {"statuses", "deps", "openapi"},  # errors → statuses; the routes' dependencies; the document
    {"routes"},
    {"main"},
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(root: Path) -> dict[str, set[str]]:
    """Every project module under `root` → the project modules it imports."""
    files = [p for package in PACKAGES for p in (root / package).rglob("*.py")]
    modules = {module_name(p, root): p for p in files}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


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


def app_part(module: str) -> str:
    """The layered part of app a module belongs to: its subpackage, or its own name."""
    return module.split(".")[1] if module.count(".") else "__init__"


def test_app_parts_all_have_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "app").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert parts - {"__init__"} == set().union(*APP_LAYERS)


def test_inside_app_routes_stand_on_use_cases_on_the_machinery():
    layer = {part: i for i, parts in enumerate(APP_LAYERS) for part in parts}
    offending = {}
    for module, imports in module_graph(ROOT).items():
        if not module.startswith("app.") or app_part(module) == "__init__":
            continue
        mine = app_part(module)
        above = {app_part(m) for m in imports if m.startswith("app.") and app_part(m) not in (mine, "__init__")
                 and layer[app_part(m)] >= layer[mine]}
        if above:
            offending[module] = sorted(above)
    assert offending == {}


def test_no_import_circle_between_any_two_modules():
    assert circles(module_graph(ROOT)) == []


def test_a_circle_planted_inside_app_is_found(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.html", "*.js", "*.css"))
    records = tmp_path / "app" / "gallery" / "records.py"  # the store imports the records; now the records import the store
    records.write_text(records.read_text() + "\nfrom app.gallery.store import Store  # noqa\n")
    (circle,) = circles(module_graph(tmp_path))
    assert {"app.gallery.records", "app.gallery.store"} <= set(circle)


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
