"""Sphinx configuration of the schnetpack-molspectra docs (MyST Markdown, autodoc + napoleon, furo).

Build: ``pip install -e ".[docs]"`` then ``sphinx-build -W -b html docs docs/_build/html``. The configuration
reference, the shipped models' page and the API pages are generated at build time (``_ext/molspectra_docs.py``).
"""

import os
import sys
from importlib.metadata import version as installed_version

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "schnetpack-molspectra"
author = "the schnetpack-molspectra authors"
copyright = "2026, the schnetpack-molspectra authors"
release = installed_version("schnetpack-molspectra")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "molspectra_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# the generated fragments that pages include (the generated API pages are pages of their own)
exclude_patterns = ["_build", "_generated/configuration.md", "_generated/models.md"]
templates_path: list = []

# MyST: heading anchors for links between pages (``page.md#a-heading``), ``$...$`` maths, definition lists
myst_heading_anchors = 4
myst_enable_extensions = ["dollarmath", "deflist", "colon_fence"]

# autodoc: members in source order, type hints in the description; napoleon reads the Google-style docstrings
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"exclude-members": "__init__"}
# a method that overrides Lightning's or torch's without a docstring of its own shows none (theirs cite their docs)
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"schnetpack-molspectra {release}"
html_static_path: list = []
