"""The wheel as a user gets it: one package, `mnist_pipeline`, with its MNIST files inside, that runs
from any directory and writes only below that directory's ./artifacts (or $MNIST_ARTIFACTS_DIR).

The wheel is built offline (no isolated build env; setuptools comes with the test extra) from a copy
of the checkout, so the build's own files (build/, *.egg-info) never land in the checkout. It is
installed, without its dependencies, into a new virtual environment; a .pth file there appends this
environment's site-packages to the new one's sys.path, so TensorFlow, Prefect and the rest are found
without a download. That .pth line only appends a folder: the .pth files inside it, among them the
checkout's editable install, are not run, so `mnist_pipeline` can come only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "artifacts", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"
)


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = Path(shutil.copytree(ROOT, work / "source", ignore=NOT_SOURCE))
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist", source])
    (built,) = (work / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed (not editable) and this environment's
    packages visible behind it."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            wheel,
        ]
    )
    site_packages = Path(
        run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "_dependencies_from_the_test_env.pth").write_text("".join(f"{path}\n" for path in ours))
    return venv


def user_env(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "PYTHONHOME", "MNIST_ARTIFACTS_DIR", "VIRTUAL_ENV")
    }
    return {**env, **extra}


def package_files(venv: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime)} of the installed package, bytecode caches aside (Python may write them)."""
    package = next((venv / "lib").glob("python3.*/site-packages/mnist_pipeline"))
    return {
        str(path.relative_to(package)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in package.rglob("*")
        if "__pycache__" not in path.parts
    }


def checkout_paths() -> set[Path]:
    """What a run could leave in the checkout: its top level, and everything under artifacts/ and data/."""
    found = set(ROOT.iterdir())
    for folder in (ROOT / "artifacts", ROOT / "data"):
        if folder.is_dir():
            found.update(folder.rglob("*"))
    return found


def test_wheel_holds_one_package_and_the_mnist_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
    assert {name.split("/")[0] for name in names} == {"mnist_pipeline", dist_info}, sorted(names)
    for package in ("mnist_pipeline/core", "mnist_pipeline/cli", "mnist_pipeline/flows", "mnist_pipeline/tasks"):
        assert f"{package}/__init__.py" in names
    for name in MNIST_FILES:
        assert f"mnist_pipeline/data/mnist/{name}" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "mnist-pipeline = mnist_pipeline.cli.main:entry_point" in entry_points


def test_checkout_folder_names_are_not_importable_from_the_wheel(venv, tmp_path):
    python = venv / "bin" / "python"
    for name in ("flows", "tasks", "tools"):
        result = subprocess.run(
            [python, "-c", f"import {name}"], capture_output=True, text=True, cwd=tmp_path, env=user_env()
        )
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, (name, result.stderr[-2000:])
    where = run(
        [
            python,
            "-c",
            "import mnist_pipeline.flows, mnist_pipeline.tasks, mnist_pipeline.core.storage.paths as p;"
            "print(mnist_pipeline.flows.__file__, mnist_pipeline.tasks.__file__, p.bundled_mnist_dir())",
        ],
        cwd=tmp_path,
        env=user_env(),
    ).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(venv), where
    assert sorted(path.name for path in Path(where[-1]).glob("*.gz")) == sorted(MNIST_FILES)


def test_installed_command_runs_from_any_directory(venv, tmp_path):
    command = venv / "bin" / "mnist-pipeline"
    installed_before, checkout_before = package_files(venv), checkout_paths()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # one epoch: a version is registered whether or not the gate promotes it
    result = run([command, "run", "--preset", "seed-mlp", "--epochs", "1"], cwd=elsewhere, env=user_env(), timeout=1200)
    assert "MNIST pipeline finished: model v0001 (seed-mlp)" in result.stdout, result.stdout
    version_dir = elsewhere / "artifacts" / "registry" / "versions" / "v0001"
    assert version_dir.is_dir()
    assert f"model files   : {version_dir}" in result.stdout
    # ($MNIST_ARTIFACTS_DIR winning over ./artifacts: tests/test_run_command.py, through scripts/run.sh)

    assert package_files(venv) == installed_before, "the run wrote into the installed package"
    assert not checkout_paths() - checkout_before, "the run wrote into the checkout"


def test_wheel_holds_the_service_and_its_page(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in (
        "__init__.py",
        "app.py",
        "holder.py",
        "batching.py",
        "corrections.py",
        "static/index.html",
        "static/page.js",
        "static/page.css",
    ):
        assert f"mnist_pipeline/serve/{name}" in names, sorted(names)
