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
	$(BIN)/medmap info $(DEMO)/data/liver_dicom
	$(BIN)/medmap anonymize $(DEMO)/data/chest_ct/CHEST-0000 $(DEMO)/deidentified --date-shift-days -365
	# worked example 1: lung nodules, benign vs malignant (short budget; README gives the full run)
	$(BIN)/medmap train $(DEMO)/data/nodules.csv --task classification -o $(DEMO)/runs/nodules --epochs 8 \
		--cache $(DEMO)/cache
	# worked example 1, part 2: find the nodules (detection; short budget, README gives the full run)
	$(BIN)/medmap train $(DEMO)/data/nodules.csv --task detection -o $(DEMO)/runs/detector --epochs 8 \
		--cache $(DEMO)/cache
	# worked example 2: liver and liver tumours (short budget; README gives the full run)
	$(BIN)/medmap train $(DEMO)/data/liver --task segmentation -o $(DEMO)/runs/liver --epochs 4 --cache $(DEMO)/cache
	$(BIN)/medmap report $(DEMO)/runs/nodules $(DEMO)/runs/detector $(DEMO)/runs/liver -o $(DEMO)/report.html
	# deployment: bundles, then predictions on DICOM studies with DICOM SEG and SR results
	$(BIN)/medmap bundle create $(DEMO)/runs/nodules -o $(DEMO)/bundles/nodules
	$(BIN)/medmap bundle create $(DEMO)/runs/liver -o $(DEMO)/bundles/liver --body-part ABDOMEN
	$(BIN)/medmap export $(DEMO)/bundles/liver --format onnx
	$(BIN)/medmap predict $(DEMO)/bundles/liver $(DEMO)/data/liver_dicom -o $(DEMO)/predictions/liver --overlays
	$(BIN)/medmap bundle create $(DEMO)/runs/detector -o $(DEMO)/bundles/detector
	# CHEST-0043: a held-out patient of both nodule models (seed 0); first with the nodules' positions given,
	# then find-then-classify with none given
	$(BIN)/medmap predict $(DEMO)/bundles/nodules $(DEMO)/data/chest_ct/CHEST-0043 -o $(DEMO)/predictions/nodules \
		$$(awk -F, '$$1 == "chest_ct/CHEST-0043" {printf "--lesion %s,%s,%s ", $$2, $$3, $$4}' $(DEMO)/data/nodules.csv)
	$(BIN)/medmap predict $(DEMO)/bundles/detector $(DEMO)/data/chest_ct/CHEST-0043 \
		--classifier $(DEMO)/bundles/nodules -o $(DEMO)/predictions/find-then-classify
	# intended use: the liver model refuses a chest CT (exit 1 and the reason expected; nothing written for it)
	! $(BIN)/medmap predict $(DEMO)/bundles/liver $(DEMO)/data/chest_ct/CHEST-0000 -o $(DEMO)/predictions/refused
	@echo
	@echo "demo outputs in $(DEMO)/:"
	@echo "  report (three models):       $(DEMO)/report.html"
	@echo "  bundles with model cards:    $(DEMO)/bundles/{nodules,detector,liver}/MODEL_CARD.md"
	@echo "  liver label maps + DICOM SEG: $(DEMO)/predictions/liver/<case>/{labels.nii.gz,seg.dcm}"
	@echo "  overlay images (DICOM SC):   $(DEMO)/predictions/liver/<case>/overlays/"
	@echo "  the liver model in ONNX:     $(DEMO)/bundles/liver/export/model-0.onnx (predict --engine onnx)"
	@echo "  nodule findings + DICOM SR:  $(DEMO)/predictions/nodules/<case>/{result.json,sr.dcm}"
	@echo "  found, then classified:      $(DEMO)/predictions/find-then-classify/<case>/{result.json,sr.dcm}"

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n auto --dist loadgroup  # a worker per core (pytest-xdist); xdist_group keeps a module's costly fixtures on one

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/dicom_load.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/sliding_window.py --overlap 0.25 --repeats 2
	$(BIN)/python benchmarks/engines.py --seg $(DEMO)/bundles/liver --cls $(DEMO)/bundles/nodules \
		--volume $(DEMO)/data/liver_dicom/liver_024

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
