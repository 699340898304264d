# `make run`: set up, then run the main job on the embedded default (SmolLM2 on CPU):
#   the warm-start round and one self-evolution round, on a local Prefect server.
# `make test`: set up, then lint (ruff, settings in pyproject.toml) and run the test suite (what CI runs).
.PHONY: setup setup-vllm run smoke test test-slow bench

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

# vLLM's CPU build in its own venv (.venv-vllm, ~3.5 GB): only the model server runs there.
setup-vllm: .venv-vllm/.installed

.venv-vllm/.installed: scripts/setup-vllm.sh
	bash scripts/setup-vllm.sh

# The cpu preset's `auto` backend is vLLM's CPU build (measured: 78 min for rounds 0 and 1 on
# 2 cores); where it cannot be installed the run goes on with transformers-cb, slower.
run: setup
	@$(MAKE) --no-print-directory setup-vllm || echo "make run: vLLM's CPU build could not be installed; the cpu preset falls back to transformers-cb (slower)"
	.venv/bin/webevolver evolve --rounds 1 --preset cpu --run main

test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q

test-slow: setup
	.venv/bin/pytest -q -m slow

smoke: setup
	.venv/bin/webevolver evolve --rounds 1 --preset smoke --run smoke

bench: setup
	.venv/bin/webevolver bench observe
	.venv/bin/webevolver bench env
	.venv/bin/webevolver bench cache
