# Two commands on a fresh machine: `make run` and `make test`. Each target creates .venv when needed.
PY      := .venv/bin/python
NB      := iterate_failing_tests.ipynb
STAMP   := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
CASSETTE := fixtures/recordings/iterate_failing_tests.jsonl
LAB_ARGS ?=  # e.g. --allow-root, --no-browser, --port=8899

.PHONY: run lab test record notebook cassettes lint bench site clean mutate

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

## test: unit tests, scenario runs and nbval on the notebook, all against the loopback fake
test: $(STAMP)
	$(PY) -m pytest -n 2

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

## site: the contribution to anthropics/claude-cookbooks (managed_agents/ notebook, helper, data; registry and
## authors entries; SITE_AUTHOR=<handle>) and the page as the site renders it, in build/site/
site: $(STAMP)
	$(PY) -m tests.site

## mutate: break the code with each curated mutation (tests/mutate.py) in a copy of the tree and run
## the tests that must catch it; fails if one survives (slow, so not part of make test)
mutate: $(STAMP)
	$(PY) -m tests.mutate

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
