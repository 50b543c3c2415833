# The two commands: `make run` (set up from nothing, then the dashboard + a worker) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run test test-sqlite test-postgres test-py313 test-liveness bench lint typecheck clean

# The demo needs the app and the demo extra (WhiteNoise, DATABASE_URL, psycopg); tests add the test tools.
$(BIN)/.installed-demo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(BIN)/.installed: $(BIN)/.installed-demo
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# PORT=8080 make run picks the port. Ctrl-C stops both processes (the worker drains first) and
# ends with status 0; the login and a first thing to look at are printed once the site answers.
PORT ?= 8000
run: $(BIN)/.installed-demo
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setupdemo
	@$(BIN)/python manage.py runworkers & worker=$$!; \
	  $(BIN)/python manage.py runserver 127.0.0.1:$(PORT) --noreload & site=$$!; \
	  trap 'trap "" INT TERM; kill -TERM $$site $$worker 2>/dev/null; wait $$site $$worker 2>/dev/null; echo " stopped."; exit 0' INT TERM; \
	  $(BIN)/python manage.py setupdemo --welcome http://127.0.0.1:$(PORT)/ --site-pid $$site; \
	  wait $$site; status=$$?; kill -TERM $$worker 2>/dev/null; wait $$worker 2>/dev/null; exit $$status

# The whole suite on SQLite, then again on PostgreSQL when it is reachable (in CI it must be).
test: $(BIN)/.installed lint typecheck test-sqlite test-postgres

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# The engine is pure Python with its own protocols: checked strictly (settings in pyproject.toml).
typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict workflow/engine

test-sqlite: $(BIN)/.installed
	$(BIN)/pytest -q

test-postgres: $(BIN)/.installed
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
	  DATABASE_URL=$(PG_URL) $(BIN)/pytest -q -m "not browser and not wheel"; \
	elif [ "$$CI" = "true" ]; then \
	  echo "PostgreSQL is not reachable at $(PG_URL): CI requires it" >&2; exit 1; \
	else \
	  echo "PostgreSQL not reachable at $(PG_URL): skipping the PostgreSQL run"; \
	fi

# The randomized liveness test alone, longer: LIVENESS_EXAMPLES=200 make test-liveness (SQLite, then
# PostgreSQL when DATABASE_URL is set); LIVENESS_SEED=17 replays one seed. make test runs seeds 0-4.
test-liveness: $(BIN)/.installed
	$(BIN)/pytest -q tests/liveness

# A second leg: Python 3.13 with the newest Django the range allows (Django 6), on SQLite.
test-py313:
	@P=""; for c in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13 2>/dev/null) $$(command -v python3.13); do \
	  if "$$c" --version >/dev/null 2>&1; then P=$$c; break; fi; done; \
	if [ -n "$$P" ]; then \
	  [ .venv313/.installed -nt pyproject.toml ] || { $$P -m venv .venv313 && .venv313/bin/pip install --quiet -e '.[test]' && touch .venv313/.installed; }; \
	  .venv313/bin/python -c "import django, sys; print('Python', sys.version.split()[0], 'Django', django.get_version())"; \
	  WFSITE_VAR_DIR=$(CURDIR)/var/py313 .venv313/bin/pytest -q -m "not browser and not postgres"; \
	else echo "Python 3.13 not found: skipping the Django 6 leg"; fi

bench: $(BIN)/.installed
	$(BIN)/pip install --quiet py-spy  # the profiles; the peers go to .venv-bench, never here
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv313 .venv-bench var
