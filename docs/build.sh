#!/usr/bin/env bash
# Build the API reference (HTML) from the docstrings into docs/_build/api, with every Sphinx
# warning an error. Needs the "docs" extra: pip install -e ".[docs]".
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf docs/_build/api docs/_build/doctrees docs/api/_generated
python -m sphinx -W --keep-going -q -b html -d docs/_build/doctrees docs/api docs/_build/api
echo "API reference: docs/_build/api/index.html"
