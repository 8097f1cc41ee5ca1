# The two commands a newcomer runs on a fresh machine:  make demo  and  make test.
# Each sets up everything it needs: the virtual environment (torch first, pinned by constraints.txt
# so that no later install can swap in a CUDA build), the package, and for the tests the Debian
# programs the integration tests start.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo-output

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/medmap demo-data $(DEMO)/data
	$(BIN)/medmap dataset check $(DEMO)/data/nodules.csv
	$(BIN)/medmap dataset check $(DEMO)/data/liver
	$(BIN)/medmap dataset check $(DEMO)/data/radiographs.csv
	$(BIN)/medmap plan $(DEMO)/data/nodules.csv -o $(DEMO)/nodules-plan.json
	$(BIN)/medmap plan $(DEMO)/data/liver -o $(DEMO)/liver-plan.json
	$(BIN)/medmap preprocess $(DEMO)/data/nodules.csv --plan $(DEMO)/nodules-plan.json --cache $(DEMO)/cache
	$(BIN)/medmap preprocess $(DEMO)/data/liver --plan $(DEMO)/liver-plan.json --cache $(DEMO)/cache
	$(BIN)/medmap info $(DEMO)/data/liver_dicom
	$(BIN)/medmap convert $(DEMO)/data/liver_dicom/liver_024 $(DEMO)/liver_024.nii.gz
	$(BIN)/medmap anonymize $(DEMO)/data/chest_ct/CHEST-0000 $(DEMO)/deidentified --date-shift-days -365
	# the main job, on a short budget (README gives the full run): train, evaluate, report
	$(BIN)/medmap train $(DEMO)/data/nodules.csv --task classification -o $(DEMO)/runs/nodules --epochs 10 \
		--cache $(DEMO)/cache
	@echo "demo outputs are in $(DEMO)/; the nodule classifier's report: $(DEMO)/runs/nodules/report.html"

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/dicom_load.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
