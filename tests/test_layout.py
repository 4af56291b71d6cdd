"""The package's layers, read from the source with `ast`: the five stages stand alone, the core under
them imports no Prefect and nothing above it, and the CLI's predict and registry commands stay off
Prefect and the stages (tests/test_tools_cli.py checks what they load at run time).

Every import counts, wherever it sits (a function body too) and however it is spelled: absolute,
relative, `from package import module`, or by the checkout's folder names `tasks`/`flows`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tasks"
CORE_DIR = ROOT / "mnist_pipeline" / "core"
CLI_DIR = ROOT / "mnist_pipeline" / "cli"
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


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, as absolute installed names. `from M import a` yields M and M.a
    (a may be a submodule); relative imports are resolved against the module's package."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(canonical(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
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


def stage_files() -> list[Path]:
    return [TASKS_DIR / f"{stage}.py" for stage in STAGES]


def test_tasks_holds_exactly_the_five_stages():
    entries = {path.name for path in TASKS_DIR.iterdir() if path.name != "__pycache__"}
    assert entries == {"__init__.py", *(f"{stage}.py" for stage in STAGES)}, (
        "tasks/ is for the five stages only; what they share belongs in mnist_pipeline/core/")


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage):
    path = TASKS_DIR / f"{stage}.py"
    own = module_name(path)
    others = sorted(name for name in imported_modules(path)
                    if is_within(name, "mnist_pipeline.tasks") and name != own)
    assert not others, f"{path.relative_to(ROOT)} imports {others}: a stage may use the core, never another stage"


@pytest.mark.parametrize("path", python_files(CORE_DIR), ids=lambda path: path.name)
def test_core_imports_neither_prefect_nor_the_layers_above(path):
    forbidden = ("prefect", "mnist_pipeline.tasks", "mnist_pipeline.flows", "mnist_pipeline.cli")
    bad = sorted(name for name in imported_modules(path) if any(is_within(name, top) for top in forbidden))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the core sits beneath Prefect, the stages, the flows and the CLI"


@pytest.mark.parametrize("filename", ["predict.py", "registry_commands.py"])
def test_cli_predict_and_registry_import_neither_prefect_nor_a_stage(filename):
    path = CLI_DIR / filename
    forbidden = ("prefect", "mnist_pipeline.tasks", "mnist_pipeline.flows")
    bad = sorted(name for name in imported_modules(path) if any(is_within(name, top) for top in forbidden))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: predict and the registry commands use the core only"


def test_the_import_reader_sees_every_spelling(tmp_path):
    """The rules above are only as good as `imported_modules`: each spelling of "train imports another
    stage" must read as an import of mnist_pipeline.tasks.<something other than train>."""
    spellings = ["from . import split", "from .split import ensure", "from .. import tasks",
                 "from ..tasks.split import ensure", "from mnist_pipeline.tasks import split",
                 "from mnist_pipeline.tasks.split import ensure", "import mnist_pipeline.tasks.split",
                 "from tasks import split", "import tasks.split",
                 "def later():\n    from mnist_pipeline.tasks import split"]
    (tmp_path / "tasks").mkdir()
    stage = tmp_path / "tasks" / "train.py"
    for source in spellings:
        stage.write_text(source + "\n")
        found = imported_modules(stage, root=tmp_path)
        assert any(is_within(name, "mnist_pipeline.tasks") and name != "mnist_pipeline.tasks.train"
                   for name in found), (source, found)
