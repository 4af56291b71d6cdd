"""The manual cannot drift: its parameters table is generated from `PipelineParameters` (checked here
row by row), README.md stays a front page, and its relative links lead somewhere.

Fast and offline: no Sphinx build (scripts/test.sh builds the docs with warnings as errors).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from docutils import nodes

from mnist_pipeline.core.modelling.models import PRESETS
from mnist_pipeline.core.modelling.parameters import PipelineParameters

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 200
MODEL = "mnist_pipeline.core.modelling.parameters.PipelineParameters"

sys.path.insert(0, str(DOCS / "_ext"))
import parameters_table  # noqa: E402  (docs/_ext is not a package)


def table_rows(table: nodes.table) -> list[list[str]]:
    """The body's rows of a docutils table, as the text of each cell."""
    body = next(iter(table.findall(nodes.tbody)))
    return [[entry.astext() for entry in row.findall(nodes.entry)] for row in body.findall(nodes.row)]


def expected_default(default: object) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def test_the_parameters_page_uses_the_generated_table():
    page = (DOCS / "parameters.md").read_text()
    assert "```{parameters-table} " + MODEL in page, "docs/parameters.md must generate its table from the model"


def test_the_parameters_table_lists_every_field_with_its_default():
    table = parameters_table.table(parameters_table.rows(PipelineParameters), "PipelineParameters")
    header = [entry.astext() for entry in next(iter(table.findall(nodes.thead))).findall(nodes.entry)]
    rows = {row[0].split()[0]: dict(zip(header, row, strict=True)) for row in table_rows(table)}
    assert list(rows) == list(PipelineParameters.model_fields), "one row per field, in the model's order"
    for name, field in PipelineParameters.model_fields.items():
        row = rows[name]
        assert row["default"] == expected_default(field.default), name
        assert "--" + name.replace("_", "-") in row["parameter"], name
        assert row["description"] == field.description, name


def test_the_allowed_values_show_choices_and_bounds():
    rows = {row["parameter"]: row for row in parameters_table.rows(PipelineParameters)}
    assert rows["preset"]["allowed"] == ", ".join(PRESETS)
    assert rows["epochs"]["allowed"] == ">= 1 and <= 1000"
    assert rows["learning_rate"]["allowed"] == "> 0 and <= 1"


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into docs/"
    )


def relative_links(markdown: str) -> list[str]:
    """The targets of the Markdown links and images that are not URLs or in-page anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("target", relative_links(README.read_text()))
def test_every_relative_link_in_the_readme_exists(target):
    path = ROOT / target.split("#")[0]
    assert path.exists(), f"README.md links to {target}, which does not exist"


def test_the_link_reader_sees_links_and_skips_urls():
    text = "[a](docs/a.md) ![b](docs/b.png) [c](https://x.org/c) [d](#d) [e](docs/e.md#part)"
    assert relative_links(text) == ["docs/a.md", "docs/b.png", "docs/e.md#part"]


def test_every_page_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    toctree = index.split("```{toctree}", 1)[1].split("```", 1)[0]
    listed = {line.strip() for line in toctree.splitlines() if line.strip() and not line.startswith(":")}
    pages = {path.stem for path in DOCS.glob("*.md")} - {"index"}
    assert pages <= listed, f"pages missing from docs/index.md's toctree: {sorted(pages - listed)}"
