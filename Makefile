# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test docs bench bench-fairness bench-calibration clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pwdeploy demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

# The documentation site (MkDocs + Material, offline) into site/; the CLI reference is generated from the app.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Sized for 2 CPU cores (about 35 minutes on 2 shared cores): compress time per phase and MACs-into-time first.
bench: $(STAMP)
	$(PY) benchmarks/compress_time.py
	$(PY) benchmarks/speedup.py --quick
	$(PY) benchmarks/latency.py --quick
	$(PY) benchmarks/pw_overhead.py
	$(PY) benchmarks/fairness.py --quick
	$(PY) benchmarks/calibration_study.py --quick
	$(PY) benchmarks/scale.py --quick

# The committed results (benchmarks/results/): the grid on three baselines (the 2nd and 3rd at 75% only), the
# sweeps on Taylor/colour, label correction, retraining lr and group-balance strength (also at 90%) on every
# method, then one table of all sweeps.
# Finished cells are cached, so an interrupted run resumes; add --device cuda --jobs 14 on a GPU.
FAIRNESS := $(PY) benchmarks/fairness.py
bench-fairness: $(STAMP)
	$(FAIRNESS) --baseline-seeds 0-2 --other-baseline-reductions 0.75
	$(FAIRNESS) --ablations-only --ablation-methods taylor --variants colour
	$(FAIRNESS) --ablations-only --families "label correction,retraining" --settings "off (soft targets everywhere),on,lr 3e-3"
	$(FAIRNESS) --ablations-only --families "group balance strength" --ablation-reductions 0.75,0.9
	$(FAIRNESS) --ablations-only --report-only --ablation-reductions 0.75,0.9
	$(FAIRNESS) --ablations-only --variants colour,subtle --families "channel allocation" \
		--settings "--allocation uniform" --name fairness_allocation_uniform
	$(METHODS_GRID) --variants colour,subtle --reductions 0.75 --arms $(METHODS_75)
	$(METHODS_GRID) --variants weak-minority,one-group --methods taylor --reductions 0.75 --arms $(METHODS_75),kd/select
	$(METHODS_GRID) --variants colour,subtle --reductions 0.9 --arms ce,pw,pw+gb,kd,kd+pseudo/0.5
	$(METHODS_GRID) --variants colour,subtle,weak-minority,one-group --methods taylor --reductions 0.9 \
		--arms ce,pw,pw+gb,kd+pseudo/0.5,fairgrape
	$(METHODS_GRID) --report-only --variants colour,subtle,weak-minority,one-group --reductions 0.75,0.9 \
		--arms $(METHODS_75),kd/select,ce/uniform,pw/uniform

# Label-free and group-aware methods (benchmarks/results/fairness_methods.*): label-free (kd, pw+pseudo, kd+pseudo, kd+pseudo/0.5, kd/select;
# ce/uniform and pw/uniform are the uniform-allocation sweep's cells)
# and group-aware (pw+gb, fairgrape) arms beside CE and PW at 75%; at 90% CE, PW, PW+GB, kd, kd+pseudo/0.5 and
# (Taylor) FairGRAPE; the tuned regimes with every method, the two new ones (weak-minority, one-group) with Taylor
# only: ~500 cells, about 2 hours on 2 idle cores. Each line writes fairness_methods.*, the last one (cached cells
# only) the union.
METHODS_GRID := $(FAIRNESS) --seeds 0-4 --name fairness_methods
METHODS_75 := ce,pw,pw+gb,kd,pw+pseudo,kd+pseudo,kd+pseudo/0.5,fairgrape

# The committed calibration study (benchmarks/results/calibration_study.*): trains and compresses its own
# synthetic model (Taylor, PW + group balance, 75%), then 3 methods x 3 strategies x 3 sizes x 5 seeds.
bench-calibration: $(STAMP)
	$(PY) benchmarks/calibration_study.py

clean:
	rm -rf runs .pytest_cache site
