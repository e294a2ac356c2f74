# chipforge: `make demo` runs the main job on the bundled default; `make test` runs the
# tests. Both set up everything first: the HDL tools (Debian packages) and .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.chipforge-installed
PYTEST := $(PY) -m pytest

.PHONY: setup demo test test-slow lint rtl rtl-check bench mutate clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py tools/install-hdl-tools.sh
	tools/install-hdl-tools.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(VENV)/bin/chipforge simulate lenet-digits-forms8 --accelerator forms8 --out build/demo/report
	$(VENV)/bin/chipforge rtl shift-add --out build/demo/rtl --lint --synth ice40
	@echo
	@echo "make demo: the report is in build/demo/report/ (report.json, accuracy.png, layers.png);"
	@echo "           the generated Verilog of the shift-and-add unit in build/demo/rtl/shift-add/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Regenerate rtl/ into build/ and fail if the committed copy differs.
rtl-check: $(STAMP)
	rm -rf build/rtl-check
	$(VENV)/bin/chipforge rtl all --out build/rtl-check > /dev/null
	diff -r rtl build/rtl-check || { echo "rtl/ is stale: run 'make rtl' and commit it"; exit 1; }

rtl: $(STAMP)
	$(VENV)/bin/chipforge rtl all --out rtl

test: lint rtl-check
	$(PYTEST) -n 2

# Paper reproductions and long sweeps (marked slow).
test-slow: $(STAMP)
	$(PYTEST) -m slow -n 2

# Sabotage runner (tools/mutate.py, docs/verification.md): one-line faults in the Python
# models and the generated Verilog against the tests that guard them; prints the kill
# ratios. Tens of minutes: not part of `make test`.
mutate: $(STAMP)
	$(PY) tools/mutate.py --verilog

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf build .pytest_cache
