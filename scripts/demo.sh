#!/usr/bin/env bash
# Set up, build the default study (pre-training included; resumes if interrupted), then
# open the dashboard on http://localhost:8501.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh runtime
.venv/bin/python -m precompute study --preset default
exec .venv/bin/streamlit run app.py
