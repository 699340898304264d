# `make run`: set up, then run the main job on the embedded default.
# `make test`: set up, then run the test suite (what CI runs).
.PHONY: setup run test test-slow bench

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

run: setup
	.venv/bin/webevolver sample --suite miniwob --tasks 10 --policy oracle

test: setup
	.venv/bin/pytest -q

test-slow: setup
	.venv/bin/pytest -q -m slow

bench: setup
	.venv/bin/webevolver bench observe
	.venv/bin/webevolver bench env
