"""The package's layers, read from the source with `ast`: every module imports only its own layer and
those beneath it, no import circle anywhere, no Prefect beneath `orchestration`, and the five stages
stand alone (tests/test_cli.py checks what commands load at run time).

Every import counts, wherever it sits (a function body too) and however it is spelled: absolute,
relative, `from package import module`, or by the checkout's folder names `tasks`/`flows`. One place
is not the module's own: the body of `if __name__ == "__main__":`, which runs only when the file is a
script, as the module `__main__` at the very top (`python flows/mnist_flow.py` is `mnist-pipeline run`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tasks"
CORE_DIR = ROOT / "mnist_pipeline" / "core"
# The production code: what the wheel ships.
SOURCE_DIRS = (ROOT / "mnist_pipeline", ROOT / "flows", ROOT / "tasks")
# Lowest first: a module may import its own layer and the layers before it, never one after it.
LAYERS = (
    "mnist_pipeline.core.support",
    "mnist_pipeline.core.storage",
    "mnist_pipeline.core.data",
    "mnist_pipeline.core.modelling",
    "mnist_pipeline.core.evaluation",
    "mnist_pipeline.core.registry",
    "mnist_pipeline.core.runs",
    "mnist_pipeline.core.tracking",
    "mnist_pipeline.orchestration",  # Prefect glue: the lowest layer that may import Prefect
    "mnist_pipeline.serve",
    "mnist_pipeline.tasks",
    "mnist_pipeline.flows",
    "mnist_pipeline.cli",
)
PREFECT_FROM = LAYERS.index("mnist_pipeline.orchestration")
MAX_MODULES_PER_CORE_PACKAGE = 10
STAGES = ("split", "preprocess", "train", "evaluate", "register")
# The checkout's folders and the names they are installed under (pyproject's package-dir).
FOLDER_PACKAGES = {"tasks": "mnist_pipeline.tasks", "flows": "mnist_pipeline.flows", "data": "mnist_pipeline.data"}


def module_name(path: Path, root: Path = ROOT) -> str:
    """The installed module name of a source file, e.g. tasks/train.py -> mnist_pipeline.tasks.train."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in FOLDER_PACKAGES:
        parts[0] = FOLDER_PACKAGES[parts[0]]
    return ".".join(parts)


def canonical(name: str) -> str:
    """`tasks.x` (the checkout's folder name) as the installed `mnist_pipeline.tasks.x`."""
    head, _, rest = name.partition(".")
    if head in FOLDER_PACKAGES:
        return FOLDER_PACKAGES[head] + ("." + rest if rest else "")
    return name


def without_main_block(tree: ast.Module) -> ast.Module:
    """The module without its `if __name__ == "__main__":` blocks (see the module's docstring)."""

    def is_main_block(node: ast.stmt) -> bool:
        return (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)
        )

    tree.body = [node for node in tree.body if not is_main_block(node)]
    return tree


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, as absolute installed names. `from M import a` yields M and M.a
    (a may be a submodule); relative imports are resolved against the module's package."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(without_main_block(ast.parse(path.read_text(), filename=str(path)))):
        if isinstance(node, ast.Import):
            found.update(canonical(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = canonical(node.module)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def source_files() -> list[Path]:
    return [path for folder in SOURCE_DIRS for path in python_files(folder)]


def layer_of(name: str) -> int | None:
    """The index of the layer `name` belongs to, or None for a module outside the layers."""
    return next((i for i, layer in enumerate(LAYERS) if is_within(name, layer)), None)


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, over the production code."""
    modules = {module_name(path): path for path in source_files()}
    graph = {}
    for name, path in modules.items():
        # `from package import module` names both; keep the names that are modules of ours.
        graph[name] = {other for other in imported_modules(path) if other in modules and other != name}
    return graph


def test_tasks_holds_exactly_the_five_stages():
    entries = {path.name for path in TASKS_DIR.iterdir() if path.name != "__pycache__"}
    assert entries == {"__init__.py", *(f"{stage}.py" for stage in STAGES)}, (
        "tasks/ is for the five stages only; what they share belongs in mnist_pipeline/core/"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage):
    path = TASKS_DIR / f"{stage}.py"
    own = module_name(path)
    others = sorted(name for name in imported_modules(path) if is_within(name, "mnist_pipeline.tasks") and name != own)
    assert not others, f"{path.relative_to(ROOT)} imports {others}: a stage may use the core, never another stage"


@pytest.mark.parametrize("path", source_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_module_imports_only_its_layer_and_those_beneath(path):
    own = layer_of(module_name(path))
    if own is None:  # the package's own __init__ and its data: nothing to place
        assert not {name for name in imported_modules(path) if layer_of(name) is not None}, path
        return
    above = sorted(name for name in imported_modules(path) if (layer_of(name) or 0) > own)
    assert not above, f"{path.relative_to(ROOT)} ({LAYERS[own]}) imports {above}, from a layer above its own"
    if own < PREFECT_FROM:
        prefect = sorted(
            name for name in imported_modules(path) if is_within(name, "prefect") or is_within(name, "prefect_dask")
        )
        assert not prefect, f"{path.relative_to(ROOT)} imports {prefect}: Prefect belongs to orchestration and above"


def test_every_package_of_the_code_has_a_layer():
    packages = {module_name(path) for path in source_files() if path.name == "__init__.py"}
    unplaced = sorted(
        p
        for p in packages
        if layer_of(p) is None and p not in ("mnist_pipeline", "mnist_pipeline.core", "mnist_pipeline.data")
    )
    assert not unplaced, f"{unplaced} belong to no layer: add each to LAYERS where it sits"


def test_the_imports_form_no_circle():
    graph = import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize("package", sorted(p.name for p in CORE_DIR.iterdir() if (p / "__init__.py").exists()))
def test_each_core_package_stays_small(package):
    modules = [p for p in (CORE_DIR / package).glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES_PER_CORE_PACKAGE, (
        f"core/{package} holds {len(modules)} modules: split it by concern"
    )


def test_the_layer_rule_catches_an_arrow_up_and_a_circle(tmp_path):
    """The rules above are only as good as their reader: an arrow from the core up to the CLI, and a
    circle between two modules, must be seen."""
    core = tmp_path / "mnist_pipeline" / "core" / "support"
    core.mkdir(parents=True)
    (core / "a.py").write_text("def later():\n    from mnist_pipeline.cli import main\n")
    found = imported_modules(core / "a.py", root=tmp_path)
    assert any((layer_of(name) or 0) > layer_of("mnist_pipeline.core.support.a") for name in found), found
    (core / "b.py").write_text("from mnist_pipeline.core.support import a\n")
    (core / "a.py").write_text("from . import b\n")
    assert "mnist_pipeline.core.support.b" in imported_modules(core / "a.py", root=tmp_path)
    assert "mnist_pipeline.core.support.a" in imported_modules(core / "b.py", root=tmp_path)


def test_a_script_block_is_not_the_modules_import(tmp_path):
    (tmp_path / "flows").mkdir()
    script = tmp_path / "flows" / "x.py"
    script.write_text('import os\nif __name__ == "__main__":\n    from mnist_pipeline.cli.main import main\n')
    assert not any(is_within(name, "mnist_pipeline.cli") for name in imported_modules(script, root=tmp_path))


def test_the_import_reader_sees_every_spelling(tmp_path):
    """Each spelling of "train imports another stage" must read as an import of
    mnist_pipeline.tasks.<something other than train>."""
    spellings = [
        "from . import split",
        "from .split import ensure",
        "from .. import tasks",
        "from ..tasks.split import ensure",
        "from mnist_pipeline.tasks import split",
        "from mnist_pipeline.tasks.split import ensure",
        "import mnist_pipeline.tasks.split",
        "from tasks import split",
        "import tasks.split",
        "def later():\n    from mnist_pipeline.tasks import split",
    ]
    (tmp_path / "tasks").mkdir()
    stage = tmp_path / "tasks" / "train.py"
    for source in spellings:
        stage.write_text(source + "\n")
        found = imported_modules(stage, root=tmp_path)
        assert any(
            is_within(name, "mnist_pipeline.tasks") and name != "mnist_pipeline.tasks.train" for name in found
        ), (source, found)


def test_the_registry_policy_and_its_storage_backends_import_each_other_only_through_the_protocol():
    """One policy over storage primitives: the policy imports no backend, a backend neither the policy
    nor the other backend; only the package's face (`open_registry`) knows them all."""
    graph = import_graph()
    package = "mnist_pipeline.core.registry"
    policy, backends = f"{package}.registry", {f"{package}.local", f"{package}.object_store"}
    assert not graph[policy] & (backends | {package}), graph[policy]
    for backend in backends:
        assert not graph[backend] & ({policy, package} | backends), (backend, graph[backend])
    assert backends | {policy} <= graph[package]
