"""One dependency direction: which folder may import which, read from every import statement
(function-local ones included), so a new import against the direction fails here, not in review.

    edgepipe (core) <- runtimes <- arch, tasks <- model <- pipeline, export <- devices <- app

devices/standalone/ (the device runner, the bundle's app check) imports nothing from edgepipe; the
runtimes, the tasks (the runner's metric functions: one definition on host and device) and the
exporters read it.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder (package) -> the folders it may import from (itself always)
ALLOWED = {
    "edgepipe": set(),
    "edgepipe.devices.standalone": set(),
    "edgepipe.runtimes": {"edgepipe", "edgepipe.devices.standalone"},
    "edgepipe.arch": {"edgepipe"},
    "edgepipe.tasks": {"edgepipe", "edgepipe.arch", "edgepipe.devices.standalone"},
    "edgepipe.model": {"edgepipe", "edgepipe.arch", "edgepipe.tasks"},
    "edgepipe.export": {
        "edgepipe",
        "edgepipe.arch",
        "edgepipe.tasks",
        "edgepipe.model",
        "edgepipe.runtimes",
        "edgepipe.devices.standalone",
    },
    "edgepipe.pipeline": {
        "edgepipe",
        "edgepipe.arch",
        "edgepipe.tasks",
        "edgepipe.model",
        "edgepipe.runtimes",
        "edgepipe.export",
    },
    "edgepipe.devices": {"edgepipe", "edgepipe.runtimes", "edgepipe.devices.standalone"},
    "edgepipe.app": {
        "edgepipe",
        "edgepipe.arch",
        "edgepipe.tasks",
        "edgepipe.model",
        "edgepipe.runtimes",
        "edgepipe.export",
        "edgepipe.pipeline",
        "edgepipe.devices",
        "edgepipe.devices.standalone",
    },
}


def package_dirs() -> dict[str, Path]:
    st = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {pkg: ROOT / path for pkg, path in st.get("package-dir", {}).items()}
    return {pkg: dirs.get(pkg, ROOT / pkg.replace(".", "/")) for pkg in st["packages"]}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def owner(module: str, packages: list[str]) -> str | None:
    """The deepest package a module name belongs to (edgepipe.pipeline.prune -> edgepipe.pipeline)."""
    hits = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def test_every_package_has_a_place_in_the_layers():
    assert set(package_dirs()) == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_dependency_direction(package):
    dirs = package_dirs()
    packages = list(dirs)
    wrong = []
    for path in sorted(dirs[package].glob("*.py")):
        for name in imports_of(path):
            target = owner(name, packages)
            if target and target != package and target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_the_allowed_graph_has_no_cycles():
    seen, stack = set(), set()

    def visit(p):
        assert p not in stack, f"cycle through {p}"
        if p in seen:
            return
        stack.add(p)
        for q in ALLOWED[p]:
            visit(q)
        stack.discard(p)
        seen.add(p)

    for p in ALLOWED:
        visit(p)


@pytest.mark.parametrize("name", ["runner.py", "app_check.py", "sensors.py"])
def test_device_side_files_stay_standalone(name):
    """Copied as they are to boards, phones and app bundles: numpy and the runtimes only (torch only as
    ExecuTorch's Python bindings need it, imported for a .pte alone); the runner's sensors.py, which travels
    with it, the standard library alone."""
    path = package_dirs()["edgepipe.devices.standalone"] / name
    top = {n.split(".")[0] for n in imports_of(path)}
    third_party = top - set(sys.stdlib_module_names) - {"__future__", "sensors"}
    allowed = set() if name == "sensors.py" else {"numpy", "onnxruntime", "ai_edge_litert", "executorch", "torch"}
    assert third_party <= allowed, third_party


def test_edgepipe_bench_starts_without_torch_or_transformers():
    """`edgepipe bench` measures a finished run's artifacts: importing torch and transformers would
    cost it ~12 s of its ~14 s start-up (measured on the 2-core VM: 17.8 s -> 6.9 s for a 3-run x86 bench)."""
    import subprocess

    code = (
        "import sys; import edgepipe.app.cli, edgepipe.app.record, edgepipe.devices.x86; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
