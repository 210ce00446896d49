# The two commands a new user needs. Both create .venv (core + every first-party plugin) if it is missing or stale.
#   make demo   train the Transformer's book recipe on English-French, export it to ONNX, verify it, and translate the
#               book's four sentences with beam search on ONNX Runtime (translation and BLEU for each)
#   make test   run the test suite (pytest)
# Each plugin is installed with its `all` extra (its optional dependencies, e.g. pandas for house-prices).
# Data: set ZOO_DATA to a folder holding the book's data, or let the zoo download it to ~/.cache/zoo/data.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/zoo-*))
STAMP := $(VENV)/.zoo-installed
DEMO_MODEL ?= transformer
# The book's four test sentences and their references (d2l §10.7.6, §11.7.4); for a translation model only.
DEMO_SENTENCES := "go ." "i lost ." "he's calm ." "i'm home ."
DEMO_REFERENCES := --reference "va !" --reference "j'ai perdu ." --reference "il est calme ." \
	--reference "je suis chez moi ."
PYTEST_ARGS ?=

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/zoo-*/pyproject.toml)
	@echo "Setting up $(VENV): zoo-core and $(words $(PLUGINS)) plugins, with torch and ONNX Runtime (minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip 23 (Python 3.11's) cannot satisfy a plugin's dependency on another local plugin listed after it with
	@# extras (zoo-modern-rnn needs zoo-rnn; pypa/pip#8785): a current pip resolves the whole list.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=24'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[cpu,dev]' $(foreach p,$(PLUGINS),-e '$(p)[all]')
	touch $@

demo: $(STAMP)
	@set -e; \
	run=$$($(BIN)/zoo train $(DEMO_MODEL)); run=$$(printf '%s\n' "$$run" | tail -n 1); \
	$(BIN)/zoo export $(DEMO_MODEL) --run "$$run" --onnx; \
	$(BIN)/zoo verify $(DEMO_MODEL) --run "$$run"; \
	if [ "$$($(BIN)/zoo info $(DEMO_MODEL) --json | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["task"])')" = translation ]; then \
	  echo "Translating the book's four sentences with beam search (4) on ONNX Runtime:"; \
	  $(BIN)/zoo predict $(DEMO_MODEL) $(DEMO_SENTENCES) $(DEMO_REFERENCES) --run "$$run" --beam 4 --runtime onnx; \
	fi

# pytest's exit status is kept in $(VENV)/.pytest-status, since make reports any failure as 2 (.ci/run reads it).
test: $(STAMP)
	@rm -f $(VENV)/.pytest-status
	@$(BIN)/python -m pytest $(PYTEST_ARGS) || { status=$$?; echo $$status > $(VENV)/.pytest-status; exit $$status; }

clean:
	rm -rf $(VENV) .pytest_cache build */*.egg-info plugins/*/*.egg-info
