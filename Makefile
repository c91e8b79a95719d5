# Two commands on a fresh machine: `make run` and `make test`. Each target creates .venv when needed.
PY      := .venv/bin/python
NB      := iterate_failing_tests.ipynb
STAMP   := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
CASSETTE := fixtures/recordings/iterate_failing_tests.jsonl
LAB_ARGS ?=  # e.g. --allow-root, --no-browser, --port=8899
# The oldest anthropic release the cookbook supports (the notebook says "tested with <this> to <the pin>").
OLDEST_ANTHROPIC := 2.10.0
OLDEST   := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed-$(OLDEST_ANTHROPIC)-$(shell sha256sum requirements.txt | cut -c1-12)

.PHONY: run lab test test-oldest sdk-check record notebook cassettes lint bench site clean mutate

$(STAMP): requirements.txt
	python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f .venv/.installed-* && touch $@

## run: execute the notebook headlessly (live with ANTHROPIC_API_KEY, else the recorded session); writes build/
run: $(STAMP)
	$(PY) -m tests.notebook_runner --out build/$(NB) --html

## lab: JupyterLab on the notebook (without a key: the recorded session at its recorded pace); saves stay publishable
lab: $(STAMP)
	$(PY) -m tests.lab $(LAB_ARGS) $(NB)

## test: unit tests, scenario runs, nbval and the browser test, all against the loopback fake; then
## tests/ran.py checks from the report that every scenario, nbval (and under CI=true the browser test) passed
test: $(STAMP)
	$(PY) -m pytest -n 2 --junitxml=build/test-results.xml
	$(PY) -m tests.ran build/test-results.xml

## test-oldest: the scenario runs and nbval again, in .venv-oldest: requirements.txt with anthropic==$(OLDEST_ANTHROPIC)
## (PYTEST_ARGS="-n 2" for two workers)
test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -m pytest $(PYTEST_ARGS) --junitxml=build/test-results-oldest.xml \
	  tests/test_scenarios.py tests/test_notebook.py::test_nbval_runs_the_committed_notebook_strictly
	$(OLDEST)/bin/python -m tests.ran --no-browser build/test-results-oldest.xml

$(OLDEST_STAMP): requirements.txt
	python3 -m venv $(OLDEST)
	python3 tests/sdk_check.py requirements $(OLDEST_ANTHROPIC) > $(OLDEST)/requirements.txt
	$(OLDEST)/bin/python -m pip install --quiet --disable-pip-version-check -r $(OLDEST)/requirements.txt
	rm -f $(OLDEST)/.installed-* && touch $@

## sdk-check: the test suite but the browser test against anthropic==VERSION, in a throwaway
## environment (build/sdk-check-VERSION); lists what fails there (PYTEST_ARGS="-n 2" for two workers)
sdk-check:
	@test -n "$(VERSION)" || { echo "make sdk-check needs the SDK release to try, e.g. make sdk-check VERSION=2.16.0."; exit 1; }
	python3 tests/sdk_check.py run $(VERSION) $(PYTEST_ARGS)

## record: run the notebook live through the recording proxy (needs ANTHROPIC_API_KEY), then refresh outputs
record: $(STAMP)
	@test -n "$$ANTHROPIC_API_KEY" || { echo "make record needs ANTHROPIC_API_KEY (it talks to the live API)."; exit 1; }
	$(PY) -m tests.replay record --out $(CASSETTE) -- $(PY) -m tests.notebook_runner --out build/recorded.ipynb
	$(MAKE) notebook

## notebook: refresh the committed notebook's outputs from the cassette
notebook: $(STAMP)
	$(PY) -m tests.notebook_runner --inplace

## cassettes: regenerate the scripted cassette and the failure scenarios (no key needed)
cassettes: $(STAMP)
	$(PY) -m tests.replay script
	$(PY) -m tests.replay script --scenario all

## lint: ruff over .py and .ipynb
lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

## bench: the notebook against the fake vs a bare kernel, and the live view at 1,000 vs 10,000 events
bench: $(STAMP)
	$(PY) -m tests.bench

## site: SITE_AUTHOR=<github-handle> make site: the pull request that replaces anthropics/claude-cookbooks'
## managed_agents/CMA_iterate_fix_failing_tests.ipynb (notebook, helper, example_data/iterate/, registry and
## authors entries, PULL_REQUEST.md) and the page as the site renders it, in build/site/ (emptied first)
site: $(STAMP)
	$(PY) -m tests.site

## mutate: the curated breakages of the notebook's cells, the fake and the configuration (tests/mutate.py),
## then mutmut over the helper and its score (tests/mutation_score.py; MUTANTS="pattern ..." for a part of it)
mutate: $(STAMP)
	$(PY) -m tests.mutate
	$(PY) -m tests.mutation_score $(MUTANTS)

clean:
	rm -rf build mutants .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
