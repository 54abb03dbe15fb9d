# The two commands a new user runs (see README.md):
#   make demo   train -> build -> serve (real Triton, CPU) -> query over HTTP and gRPC -> Locust load test -> report
#   make test   the whole test suite, slow end-to-end tests included
# Both create the virtual environment first when it is missing, stale or half-installed.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: .venv demo test test-fast system-demo system-test compose-config dashboards clean-demo help

help:
	@echo "make demo   - run the whole pipeline end to end on this CPU machine (about 10 minutes the first time)"
	@echo "make test   - run the test suite (slow end-to-end tests included)"
	@echo "make .venv  - only create/repair the virtual environment"

.venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock common/bootstrap.py
	@test -n "$(PYTHON)" || { echo "error: no python3.11 found on PATH; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"; exit 2; }
	$(PYTHON) -m common.bootstrap --venv $(VENV)

# system packages first (seconds): installed when root or passwordless sudo, else one line saying what to install
system-demo system-test:
	@test -n "$(PYTHON)" || { echo "error: no python3.11 found on PATH; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"; exit 2; }
	@$(PYTHON) -m common.system_packages --for $(subst system-,,$@)

demo: system-demo $(STAMP)
	$(PY) -m demo

test: system-test $(STAMP)
	$(PY) -m pytest -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m "not slow"

dashboards: $(STAMP)
	$(PY) -m monitoring generate

# deploy/kubernetes: overlay patches from settings.toml, `kubectl kustomize` of every overlay, validation, rendered/*.yaml
k8s-render: $(STAMP)
	$(PY) -m deploy render

# validates both stacks without an engine; the secrets only need a value to be checked, not a real one
compose-config:
	TRITON_ADMIN_TOKEN=$${TRITON_ADMIN_TOKEN:-config-check} GRAFANA_ADMIN_PASSWORD=$${GRAFANA_ADMIN_PASSWORD:-config-check} \
	  docker-compose -f docker-compose.yml config -q
	TRITON_ADMIN_TOKEN=$${TRITON_ADMIN_TOKEN:-config-check} GRAFANA_ADMIN_PASSWORD=$${GRAFANA_ADMIN_PASSWORD:-config-check} \
	  docker-compose -f docker-compose.yml -f docker-compose.cpu.yml config -q
	@echo "docker-compose.yml and docker-compose.cpu.yml are valid"

clean-demo:
	rm -rf .demo runs benchmarks/results
