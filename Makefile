# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-fairness bench-calibration clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pwdeploy demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

bench: $(STAMP)
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/speedup.py
	$(PY) benchmarks/pw_overhead.py
	$(PY) benchmarks/fairness.py --quick
	$(PY) benchmarks/calibration_study.py --quick
	$(PY) benchmarks/scale.py

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
	$(FAIRNESS) $(ISSUE11_ARMS) --variants colour,subtle --name fairness_issue11
	$(FAIRNESS) $(ISSUE11_ARMS),kd/select --variants weak-minority,one-group --methods taylor --name fairness_issue11_regimes

# Issue 11: label-free (kd, pw+pseudo, kd+pseudo; kd/select in the new regimes) and group-aware (pw+gb, fairgrape)
# arms on the tuned regimes (every method) and on two they were not tuned on (weak-minority, one-group: Taylor
# only, to fit 2 CPU cores), at 75% and 90%, 5 seeds. ~520 cells, ~2 h on 2 cores.
ISSUE11_ARMS := --reductions 0.75,0.9 --seeds 0-4 --arms ce,pw,pw+gb,kd,pw+pseudo,kd+pseudo,fairgrape

# The committed calibration study (benchmarks/results/calibration_study.*): trains and compresses its own
# synthetic model (Taylor, PW + group balance, 75%), then 3 methods x 3 strategies x 3 sizes x 5 seeds.
bench-calibration: $(STAMP)
	$(PY) benchmarks/calibration_study.py

clean:
	rm -rf runs .pytest_cache
