"""Sphinx configuration of the manual: MyST Markdown pages, the furo theme, the CLI reference generated
from the argparse parser (sphinx-argparse) and the parameters tables generated from the pydantic models
(docs/_ext/parameters_table.py). Builds offline: no intersphinx, nothing fetched.

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the checkout: mnist_pipeline, for the generated pages

project = "MNIST training pipeline"
author = "the MNIST pipeline team"
copyright = "2026, the MNIST pipeline team"

extensions = ["myst_parser", "sphinxarg.ext", "parameters_table"]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3  # `[text](page.md#a-heading)` and `(#a-heading)` links to h1-h3
myst_enable_extensions = ["colon_fence", "deflist"]

highlight_language = "text"  # a fence without a language is output or a diagram, not Python

html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_title = "MNIST training pipeline"
html_show_sourcelink = False
