# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MLflow, for benchmarks/registry_scale.py's comparison only: its own environment, not a
# dependency of retain.
MLFLOW_VENV := .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed
# alibi-detect, for benchmarks/shift_mmd.py's comparison only, likewise.
ALIBI_VENV := .venv-alibi
ALIBI_STAMP := $(ALIBI_VENV)/.installed
DEMO_DIR ?= retain-demo

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(MLFLOW_STAMP):
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet "mlflow-skinny>=3,<4" "sqlalchemy>=2" alembic
	touch $(MLFLOW_STAMP)

$(ALIBI_STAMP):
	test -x $(ALIBI_VENV)/bin/python || $(PYTHON) -m venv $(ALIBI_VENV)
	$(ALIBI_VENV)/bin/python -m pip install --quiet "alibi-detect[torch]==0.13.*" "torch>=2.14,<2.15"
	touch $(ALIBI_STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/retain demo --workdir $(DEMO_DIR)

# pytest's own script, not `python -m pytest`: that would put the checkout on sys.path, where
# the folders would import as top-level packages and hide a stale import.
test: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/pytest -q

bench: $(STAMP) $(MLFLOW_STAMP) $(ALIBI_STAMP)
	$(BIN)/python benchmarks/chaos.py
	$(BIN)/python benchmarks/scale_out.py --mlflow-python $(MLFLOW_VENV)/bin/python
	$(BIN)/python benchmarks/shift_mmd.py --alibi-python $(ALIBI_VENV)/bin/python
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/probe.py
	$(BIN)/python benchmarks/replay_storage.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/gate_errors.py
	$(BIN)/python benchmarks/defaults.py
	records=$$(mktemp) && trap 'rm -f "$$records"' EXIT && \
	$(BIN)/python benchmarks/policy_regret.py --seeds 0 1 2 3 --retrain-seeds 3 --records "$$records" && \
	$(BIN)/python benchmarks/policy_fit.py "$$records"
	$(BIN)/python benchmarks/new_class_forgetting.py

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) $(ALIBI_VENV) $(DEMO_DIR) .pytest_cache
