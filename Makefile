# The two commands of the README:
#   make report   set up .venv (Python >= 3.12, found by tools/find-python),
#                 write the demo registry and render reports/demo/report.html
#   make test     set up the same way, make sure a Chromium exists for the browser
#                 test (Debian's package, installed when missing and we are root
#                 with apt-get; never `playwright install`), run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hmlib-installed
PARAMS ?= params/demo.yaml

.PHONY: report test setup clean chromium
report: $(STAMP)
	$(VENV)/bin/hmreport demo
	$(VENV)/bin/hmreport run $(PARAMS)

test: $(STAMP) chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# tests/test_browser.py skips (and says why) only where this could not install Chromium; a CJK font
# (fonts-droid-fallback) lets figures draw Chinese, Japanese and Korean names (tests/test_figure_text.py).
chromium:
	@missing=""; \
	command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing="chromium"; \
	[ -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || missing="$$missing fonts-droid-fallback"; \
	if [ -n "$$missing" ]; then \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	  echo "not installed: $$missing (tests that need them will be skipped and say so)"; \
	fi

setup: $(STAMP)

$(STAMP): pyproject.toml
	@py=$$(HMLIB_PYTHON="$(HMLIB_PYTHON)" sh tools/find-python) || exit 1; \
	if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then rm -rf $(VENV); fi; \
	[ -x $(PY) ] || { echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV); } || exit 1
	@echo "installing hmlib and its pinned dependencies into $(VENV) (a few minutes the first time) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
