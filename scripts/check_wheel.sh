#!/usr/bin/env bash
# The package a user installs: build the wheel, install it (not editable) into a clean virtual
# environment, and run `sparselens --version` and a short `sparselens demo` from outside the checkout,
# so the shipped models, tokenizer and viewer assets must come from the wheel's package data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SPARSELENS_TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/sparselens-*.whl)
size=$(stat -c %s "$wheel")
echo "check_wheel: $(basename "$wheel") is $((size / 1000000)) MB"
[ "$size" -lt 30000000 ] || { echo "check_wheel: the wheel is over 30 MB"; exit 1; }
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
cd "$work"  # nothing from the checkout on the path
"$work/venv/bin/sparselens" --version
"$work/venv/bin/python" -c "import sparselens, pathlib; assert (pathlib.Path(sparselens.__file__).parent / 'py.typed').is_file()"
"$work/venv/bin/sparselens" demo --steps 20 --out "$work/demo" 2>/dev/null | tail -4
test -s "$work/demo/circuit.html" && test -s "$work/demo/circuit.json"
echo "check_wheel: ok"
