# phoenixci — every target installs what it needs first (scripts/bootstrap.sh is idempotent).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean-state

setup:
	@scripts/bootstrap.sh

# KEEP=1 make demo: leave the environment up (the demo prints how to reach and remove it)
demo: setup
	$(BIN)/phoenixci demo $(if $(filter 1 yes true,$(KEEP)),--keep always)

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check phoenixci tests app bench infra/files playbooks/inventory_plugins
	$(BIN)/mypy phoenixci
	$(BIN)/cfn-lint infra/*.yaml
	BC_SKIP_MAPPING=TRUE $(BIN)/checkov --quiet --compact --skip-download --framework cloudformation -d infra
	cd playbooks && PATH="$(abspath $(BIN)):$$PATH" ANSIBLE_CONFIG=ansible.cfg $(abspath $(BIN))/ansible-lint --offline --profile production .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
