# The two commands of the README, and a few helpers for chapter authors.
#   make book      set up, execute every chapter (papermill), build the HTML into _build/html
#   make test      set up, then every check: ruff, unit tests, nbval, site build, site test
#   make refresh   re-execute the notebooks in book/ in place (ci profile): the committed outputs
#   make test-chapter NB=book/01_from_ode_to_s4.ipynb   one chapter's checks alone
# Variables: PROFILE=auto|ci|full (make book; auto = full when a CUDA GPU is visible),
#            CELL_TIMEOUT=seconds one notebook cell may run (default 600),
#            CHROMIUM=a browser for the site test (default /usr/bin/chromium, else apt installs it).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PROFILE ?= auto
CELL_TIMEOUT ?= 600
NB ?=
VENV := .venv
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
# scripts/setup.sh and the site test read it from the environment (make CHROMIUM=... works too).
export CHROMIUM

.PHONY: help setup book test refresh test-chapter site clean

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

setup:
	scripts/setup.sh --browser

book:
	scripts/setup.sh
	scripts/build_book.sh --execute --profile $(PROFILE) --timeout $(CELL_TIMEOUT)

test:
	scripts/test.sh

refresh:
	scripts/setup.sh
	$(VENV)/bin/python scripts/execute_notebooks.py --in-place --timeout $(CELL_TIMEOUT) $(NB)

test-chapter:
	@test -n "$(NB)" || { echo "usage: make test-chapter NB=book/<chapter>.ipynb"; exit 2; }
	scripts/setup.sh
	$(VENV)/bin/pytest tests/test_notebooks_clean.py -k "$(notdir $(basename $(NB)))"
	$(VENV)/bin/pytest $(NBVAL) $(NB)

# Build the site from the committed outputs and open every page in headless Chromium.
site:
	scripts/setup.sh --browser
	scripts/build_book.sh
	$(VENV)/bin/pytest tests/site -m site

clean:
	rm -rf _build
