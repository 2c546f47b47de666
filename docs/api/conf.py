"""Sphinx configuration of the API reference, generated from the docstrings.

Build it with ``docs/build.sh``: warnings are errors. To add a package to the reference, add
its name to ``PACKAGES`` below; its page is generated at build time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))  # the source tree, installed or not

# The public packages, in the order of the library's layers (each uses only those above it).
PACKAGES = [
    ("approxeq.groups", "Groups"),
    ("approxeq.nn", "Building blocks"),
    ("approxeq.symmetrize", "Symmetrisation"),
    ("approxeq.approximate", "Approximate equivariance"),
    ("approxeq.np", "Neural processes"),
    ("approxeq.data", "Data"),
    ("approxeq.train", "Training"),
    ("approxeq.experiments", "Experiments"),
    ("approxeq.testing", "Testing your own models"),
    ("approxeq.plot", "Figures"),
]
# names a package re-exports from another one, documented there
REEXPORTED = {"approxeq.testing": ["EquivarianceReport", "equivariance_error"]}

project = "approxeq"
author = "The approxeq developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Optional extras that a reference build should not need installed: stood in for when absent.
autodoc_mock_imports = [m for m in ("matplotlib", "xarray", "netCDF4", "pandas", "networkx",
                                    "tqdm", "yaml") if importlib.util.find_spec(m) is None]
html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged page would make Sphinx rebuild it every time.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _generate_pages() -> None:
    """One page per package (``automodule`` of its public names) and the table of contents."""
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    for name, title in PACKAGES:
        heading = f"``{name}``: {title}"
        exclude = ", ".join(REEXPORTED.get(name, []))
        options = f"   :exclude-members: {exclude}\n" if exclude else ""
        _write_if_changed(out / f"{name}.rst",
                          f"{heading}\n{'=' * len(heading)}\n\n.. automodule:: {name}\n{options}")
    toc = "".join(f"   _generated/{name}\n" for name, _ in PACKAGES)
    _write_if_changed(out / "toc.inc", f".. toctree::\n   :maxdepth: 1\n\n{toc}")
    for stale in out.glob("approxeq.*.rst"):
        if stale.stem not in {name for name, _ in PACKAGES}:
            stale.unlink()


_generate_pages()
