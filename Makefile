# The two commands: `make demo` runs a demo competition end to end; `make test` runs the tests.
# Both create the virtual environment (.venv) and install everything on first use.
VENV ?= .venv
STAMP := $(VENV)/.referee-installed

.PHONY: install demo test bench images clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

# The engine and the base image come first when this machine can have them (progress shown), so the
# sandboxed container samples are part of the first run; without them the demo runs the rest.
demo: $(STAMP)
	@bash scripts/ensure-docker.sh && $(VENV)/bin/referee images build || \
	  echo "referee: no Docker engine or base image here: the demo runs without the container samples" >&2
	$(VENV)/bin/referee demo

test: $(STAMP)
	bash scripts/test.sh $(PYTEST_ARGS)

images: $(STAMP)
	bash scripts/ensure-docker.sh
	$(VENV)/bin/referee images build

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf demo-workspace referee-workspace .pytest_cache
