# The two commands a user needs: `make book` and `make test`. Both set everything up on a fresh machine.
PYTHON  ?= python3
PROFILE ?= default
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.emoprobe-setup-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup book test test-quick models models-scratch bench clean-book lab

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[book,test]'
	# facenet-pytorch pins torch<2.3/numpy<2; its MTCNN works with ours: install without its pins
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	$(PY) -m ipykernel install --sys-prefix --name emoprobe --display-name "Python (emoprobe)" >/dev/null
	@rm -f $(VENV)/.emoprobe-setup-* && touch $@
	@echo "[setup] $(VENV) ready"

## Execute every chapter under PROFILE (smoke|default|paper) and render the book; prints index.html's path.
book: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) -m emoprobe.book --profile $(PROFILE)

## Unit tests, smoke execution of every chapter, book build, headless-browser check.
test: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) -m pytest -q -p no:cacheprovider

test-quick: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) -m pytest -q -m "not slow" -p no:cacheprovider

## Retrain every embedded model from a seed (two chains side by side on the 2 cores; times in the model cards).
## (MicroVLM's stage 0 comes from the committed tower in data/towers/ while its cache key matches; models-scratch
## recomputes it too, about 40 minutes more.)
models: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) -m emoprobe.train --all --jobs 2 --seed 0

models-scratch: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) -m emoprobe.train --all --jobs 2 --seed 0 --recompute-stage0

## Benchmarks print figures (never timed tests).
bench: setup
	EMOPROBE_ROOT=$(CURDIR) $(PY) scripts/bench_book.py

lab: setup
	EMOPROBE_ROOT=$(CURDIR) $(VENV)/bin/jupyter lab chapters/

clean-book:
	rm -rf _build book/chapters data/cache/stamps book/status.md book/findings.md
