# The two commands of the README:
#   make report   set up .venv (Python >= 3.12, found by tools/find-python),
#                 write the demo registry and render reports/demo/report.html
#   make test     set up the same way and run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hmlib-installed
PARAMS ?= params/demo.yaml

.PHONY: report test setup clean
report: $(STAMP)
	$(VENV)/bin/hmreport demo
	$(VENV)/bin/hmreport run $(PARAMS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	@py=$$(HMLIB_PYTHON="$(HMLIB_PYTHON)" sh tools/find-python) || exit 1; \
	if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then rm -rf $(VENV); fi; \
	[ -x $(PY) ] || { echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV); } || exit 1
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
