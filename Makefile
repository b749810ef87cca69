# ShiftWatch developer entry points. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system lint test demo soak bench-beauty bench-engine bench-scoring bench-e2e eval-taobao detect-eval clean

$(STAMP): pyproject.toml setup.py $(wildcard model/online/*.pyx)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) system

# Debian's chromium, chromium-driver and docker-compose for the tests (no-op once installed).
system:
	sh deploy/setup-system.sh

# ruff (lint and format) and mypy, configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

# Train on the shipped Taobao sample (time split) and evaluate against the baselines.
eval-taobao: install
	$(BIN)/shiftwatch train --data data/taobao/UserBehavior_head_84475rows.csv.gz \
		--out checkpoints/taobao --t1 2017-12-01T00:00:00+08:00 --t2 2017-12-02T00:00:00+08:00
	$(BIN)/shiftwatch evaluate --checkpoint checkpoints/taobao \
		--data data/taobao/UserBehavior_head_84475rows.csv.gz \
		--json bench/results/taobao.json --report bench/results/taobao.md

# Shift detectors on spliced and naturally labelled Taobao histories; tunes and calibrates
# the worker's detector (checkpoints/taobao/detector.json).
detect-eval: install
	test -f checkpoints/taobao/checkpoint.json || $(MAKE) eval-taobao
	$(BIN)/shiftwatch detect-eval --checkpoint checkpoints/taobao --data data/taobao/UserBehavior_head_84475rows.csv.gz \
		--json bench/results/detect.json --report bench/results/detect.md

# Item-level check against published SASRec / S3-Rec figures (leave-one-out, full ranking).
bench-beauty: install
	$(BIN)/shiftwatch train --data data/amazon-beauty/Beauty.txt.gz --out checkpoints/beauty --max-minutes 60 --no-calibrate
	$(BIN)/shiftwatch evaluate --checkpoint checkpoints/beauty --data data/amazon-beauty/Beauty.txt.gz \
		--json bench/results/beauty.json --report bench/results/beauty.md

bench-engine: install
	test -f checkpoints/taobao/checkpoint.json || $(MAKE) eval-taobao
	$(BIN)/python -m bench.engine --checkpoint checkpoints/taobao --json bench/results/engine.json

# The worker's scoring stage on the head sample and the 66k-user time slice, against a full recompute.
bench-scoring: install
	test -f checkpoints/taobao/checkpoint.json || $(MAKE) eval-taobao
	$(BIN)/python -m bench.scoring --checkpoint checkpoints/taobao --json bench/results/scoring.json \
		--baseline bench/results/scoring_baseline.json --profile bench/results/scoring_profile.md

# One worker end to end (not in CI, about 40 minutes): its peers, max sustainable rate and open-loop latency.
bench-e2e: install
	test -f checkpoints/taobao/checkpoint.json || $(MAKE) eval-taobao
	$(BIN)/python -m bench.e2e --checkpoint checkpoints/taobao --json bench/results/e2e.json

# Soak (not in CI): a million events through one worker with a state TTL; memory sampled.
soak: install
	test -f checkpoints/taobao/checkpoint.json || $(MAKE) eval-taobao
	$(BIN)/python -m bench.soak --events 1000000 --json bench/results/soak.json --report bench/results/soak.md

# The main job: Kafka, a worker and the shipped Taobao sample, with a live feed; trains a model if none exists.
demo: install
	$(BIN)/shiftwatch demo

clean:
	rm -rf checkpoints .pytest_cache .shiftwatch
