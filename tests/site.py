"""The pull request to anthropics/claude-cookbooks, and the page as its site shows it: `make site`.

Our notebook replaces the repository's `managed_agents/CMA_iterate_fix_failing_tests.ipynb` under
that name. `python -m tests.site [OUT]` (default build/site, emptied first) writes, with OUT
standing in for the repository's root:

- managed_agents/CMA_iterate_fix_failing_tests.ipynb: the notebook, rewritten to stand alone there
  (data path, attribution slug, nothing that names this project; see `publish_notebook`);
- managed_agents/watch_and_verify.py: the helper module beside it (`publish_helper`);
- managed_agents/example_data/iterate/: calc.py and test_calc.py;
- registry.yaml and authors.yaml: our entries (the registry entry replaces the one for that path);
- PULL_REQUEST.md: what it replaces and why, the dependency commands, the model, how it was tested;
- CMA_iterate_fix_failing_tests.md: the page as the site renders it (markdown, code, printed text).

Environment: SITE_AUTHOR (a GitHub handle, required), SITE_AUTHOR_NAME, SITE_AUTHOR_WEBSITE,
SITE_AUTHOR_AVATAR, SITE_DATE (YYYY-MM-DD, default today).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat

from tests.replay import FIXTURES, ROOT

NAME = "iterate_failing_tests"  # ours
NOTEBOOK = ROOT / f"{NAME}.ipynb"
HELPER = ROOT / "watch_and_verify.py"
FOLDER = "managed_agents"
STEM = "CMA_iterate_fix_failing_tests"  # the repository's notebook that ours replaces, and its name
SITE_NOTEBOOK = f"{FOLDER}/{STEM}.ipynb"
SITE_HELPER = f"{FOLDER}/{HELPER.name}"
OUR_DATA = "fixtures/calc"
DATA = "example_data/iterate"  # the replaced notebook's data folder, under managed_agents/
DATA_FILES = ("calc.py", "test_calc.py")
PAGE = f"{STEM}.md"
PULL_REQUEST = "PULL_REQUEST.md"


def slug(stem: str) -> str:
    """The attribution slug the repository's test derives from a notebook's file name."""
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


SLUG_SHAPE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # a tag of another shape is not counted
TAG = "claude-cookbooks/iterate-failing-tests"  # our attribution tag
SITE_TAG = f"claude-cookbooks/{slug(STEM)}"
HINT, SITE_HINT = "REPLAY_HINT", "EXTRA_HINT"  # the helper's no-key hint: ours names the replay
HINT_BLOCK = re.compile(r"(?:^#[^\n]*\n)*^(?:REPLAY|EXTRA)_HINT = [^\n]*$", re.M)
SITE_HINT_BLOCK = (
    f'# Text appended to the no-key and no-connection sentences (none here).\n{SITE_HINT} = ""'
)
DATA_LINE = re.compile(r"""^(\s*CALC_DIR\s*=\s*Path\()\s*(["'])fixtures/calc/?\2\s*\)""", re.M)

# The registry entry. One sentence of 15 to 25 words.
DESCRIPTION = (
    "Entry-point Managed Agents tutorial: watch an agent fix a failing test suite live, then"
    " verify its fix and regression tests yourself."
)
# From the categories the repository's Managed Agents entries use (MANAGED_AGENTS_CATEGORIES):
# Tools, as the replaced entry had (the agent gets only the toolset's tools its task needs), and
# Observability, as the entries on watching sessions live have (the event stream, usage, history).
CATEGORIES = ("Claude Managed Agents", "Tools", "Observability")
MANAGED_AGENTS_CATEGORIES = frozenset(
    {"Claude Managed Agents", "Tools", "Integrations", "Observability", "Evals"}
    | {"Agent Patterns", "Skills"}
)
HANDLE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Names the repository lacks: none may be left in the published notebook, helper or data.
TARGETS = "run|lab|test|record|notebook|cassettes|lint|bench|site|mutate|clean"
ABSENT = {
    "make": re.compile(rf"`make\b|\bmake (?:{TARGETS})\b|\bMakefile\b", re.I),
    "fixtures/": re.compile(r"fixtures/", re.I),
    "tests/": re.compile(r"\btests/", re.I),
    "replay": re.compile(r"replay", re.I),
    "cassette": re.compile(r"cassette", re.I),
    "session_view": re.compile(r"session_view", re.I),
    "this project": re.compile(r"\b(?:this|the) project\b", re.I),
    NAME: re.compile(NAME, re.I),
}


def leftovers(text: str) -> list[str]:
    """Each name the repository lacks that `text` still contains, with what surrounds it."""
    return [
        f"{name}: …{text[max(0, m.start() - 30) : m.end() + 30]!r}…"
        for name, pattern in ABSENT.items()
        for m in pattern.finditer(text)
    ]


def description_problems(text: str) -> list[str]:
    words = len(text.split())
    problems = [] if 15 <= words <= 25 else [f"{words} words, not 15 to 25"]
    if "\n" in text or not text.endswith(".") or re.search(r"[.!?]\s", text):
        problems.append("not one sentence on one line")
    return problems


def rewrite_data_path(nb: nbformat.NotebookNode) -> None:
    """Point `fixtures/calc` at the repository's example_data/iterate, in code and markdown; the
    code must hold exactly one `CALC_DIR = Path("fixtures/calc")` line."""
    hits = [c for c in nb.cells if c.cell_type == "code" for _ in DATA_LINE.finditer(c.source)]
    if len(hits) != 1:
        raise SystemExit(f'expected one `CALC_DIR = Path("fixtures/calc")` line, found {len(hits)}')
    for cell in nb.cells:
        cell.source = cell.source.replace(OUR_DATA, DATA)


def publish_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as the repository holds it: its data in example_data/iterate, the attribution
    tag for its file name there, the helper's hint under a neutral name, and no markdown list item
    that names a `make` target (the Prerequisites' offline bullet). Any other name the repository
    lacks stops the build (`build`)."""
    rewrite_data_path(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(TAG in c.source for c in code):
        raise SystemExit(f"no {TAG!r} attribution tag in the notebook's code")
    for cell in code:
        cell.source = re.sub(rf"\b{HINT}\b", SITE_HINT, cell.source.replace(TAG, SITE_TAG))
    item = re.compile(r"^\s*(?:[-*+]|\d+\.)\s")
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.split("\n")
            kept = [
                line for line in lines if not (item.match(line) and ABSENT["make"].search(line))
            ]
            cell.source = "\n".join(kept)
    return nb


def publish_helper(text: str) -> str:
    """The helper as the repository holds it: an empty hint under a neutral name (no replay there)
    and the notebook's name there."""
    text, found = HINT_BLOCK.subn(lambda _: SITE_HINT_BLOCK, text)
    if found != 1:
        raise SystemExit(f"expected one {HINT} assignment in {HELPER.name}, found {found}")
    return re.sub(rf"\b{HINT}\b", SITE_HINT, text).replace(f"{NAME}.ipynb", f"{STEM}.ipynb")


def plain(markdown: str) -> str:
    """Markdown as one line of plain text: link text kept, tags and emphasis marks dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"<[^>]+>|\*+|`+|(?<!\w)_+|_+(?!\w)", "", text)
    return " ".join(text.split())


def title(nb: nbformat.NotebookNode) -> str:
    """The notebook's first H1, as plain text."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if re.match(r"#\s+\S", line):
                    return plain(line.lstrip("#"))
    raise SystemExit("the notebook has no H1 title")


def q(value: str) -> str:
    """A single-quoted YAML scalar on one line."""
    return "'" + " ".join(value.split()).replace("'", "''") + "'"


def registry_yaml(heading: str, author: str, date: str) -> str:
    categories = "".join(f"  - {q(c)}\n" for c in CATEGORIES)
    return (
        f"- title: {q(heading)}\n  description: {q(DESCRIPTION)}\n"
        f"  path: {q(SITE_NOTEBOOK)}\n  authors:\n  - {q(author)}\n"
        f"  date: {q(date)}\n  categories:\n{categories}"
    )


def authors_yaml(author: str, env: Mapping[str, str]) -> str:
    name = env.get("SITE_AUTHOR_NAME", author)
    website = env.get("SITE_AUTHOR_WEBSITE", f"https://github.com/{author}")
    avatar = env.get("SITE_AUTHOR_AVATAR", f"https://github.com/{author}.png")
    return f"{author}:\n  name: {q(name)}\n  website: {q(website)}\n  avatar: {q(avatar)}\n"


def requirements(nb: nbformat.NotebookNode) -> list[str]:
    """The quoted requirements of the notebook's `%pip install` cell."""
    for cell in nb.cells:
        if cell.cell_type == "code" and (m := re.search(r"%pip install (.*)", cell.source)):
            found = re.findall(r"""["']([^"']+)["']""", m.group(1))
            if found:
                return found
    raise SystemExit("the notebook has no `%pip install` cell with quoted requirements")


def default_model(nb: nbformat.NotebookNode) -> str:
    pattern = r"""os\.environ\.get\(\s*["']COOKBOOK_MODEL["']\s*,\s*["']([^"']+)["']"""
    for cell in nb.cells:
        if cell.cell_type == "code" and (m := re.search(pattern, cell.source)):
            return m.group(1)
    raise SystemExit("the notebook sets no default model (COOKBOOK_MODEL)")


def pull_request(nb: nbformat.NotebookNode, heading: str, author: str) -> str:
    """PULL_REQUEST.md: the description of the pull request."""
    reqs = " ".join(f'"{r}"' for r in requirements(nb))
    floor = next((r for r in requirements(nb) if r.startswith("anthropic")), "anthropic")
    model = default_model(nb)
    data = f"{FOLDER}/{DATA}/"
    tests = len(re.findall(r"^def test_", (FIXTURES / "test_calc.py").read_text(), re.M))
    stated = re.search(r"\b(\w+) planted bugs\b", "\n".join(c.source for c in nb.cells))
    bugs = stated.group(1) if stated else "its"
    listed = re.search(r"^TOOLS = \[([^\]]*)\]", "\n".join(c.source for c in nb.cells), re.M)
    tools = len(re.findall(r"[\"'](\w+)[\"']", listed.group(1))) if listed else "few"
    return f"""# Replace `{SITE_NOTEBOOK}`: {heading}

## What this replaces, and why

This pull request replaces the Managed Agents entry-point tutorial, `{SITE_NOTEBOOK}`, with a rewrite under the same path, so the folder's README, its links and the registry entry keep pointing at it. The replaced notebook turns on every tool of the agent toolset (web tools included) with `always_allow`, and checks the agent's work by asking the agent to rerun the tests. This one keeps the same task (a small `calc.py` whose tests fail) and the same shape (agent, environment, files, session, event stream, cleanup), and adds what a reader should copy into real code: least privilege, a budget, a stream loop that survives a dropped connection, and a verification the agent cannot influence.

## What changes for readers

- A first `%pip install` cell, and a setup cell that checks for a key and, opened without its helper or data, says in one sentence what is missing and what to do.
- The agent gets only the {tools} tools the task needs (no web tools); the environment has `limited` networking; every resource carries the `metadata` attribution tag `{SITE_TAG}`; the session has a spending cap.
- The stream loop is written inline in the notebook (stream first, then send), and handles every way a turn ends (`end_turn`, `requires_action`, `retries_exhausted`, `budget_reached`, `refusal`, termination, an interrupt); a dropped or stalled stream reconnects the documented way.
- Verification is independent: the agent's `calc.py` is downloaded and diffed, then the original tests run against it on the reader's machine, each test alone in a bounded process, with a per-function check that tells root causes from extra edits.
- A second turn on the same session writes regression tests, and the notebook proves which root cause each one catches.
- Cleanup interrupts a session only if it still runs, archives everything, and after a kernel restart finds what the notebook created by its tag.
- The data in `{data}` changes: `calc.py` now has {bugs} planted bugs, and `test_calc.py` has {tests} tests.
- The helper module `{SITE_HELPER}` (beside the notebook, as `utilities.py` is) holds the chores that are not the API: the live view, the printed transcript, the test runner and the report. Every result a reader needs is printed, so the site shows it; the ipywidgets live view is an extra for JupyterLab.

## Files

- `{SITE_NOTEBOOK}` (replaced) and `{SITE_HELPER}` (new)
- `{data}calc.py` and `{data}test_calc.py` (replaced)
- `registry.yaml`: the entry whose `path` is `{SITE_NOTEBOOK}` is replaced by the one in this build's `registry.yaml`
- `authors.yaml`: add the `{author}` entry from this build's `authors.yaml` unless it is there (keys stay sorted case-insensitively)

## Dependencies

The notebook needs a newer `anthropic` (Managed Agents streaming types) than the repository locks, and `ipywidgets` for the live view. Run, from the repository's root:

```sh
uv add {reqs}
cd {FOLDER} && uv add {reqs}
```

and commit the changed `pyproject.toml` and lock files. The notebook's first cell installs the same requirements (`{floor}`) for a reader without the repository's environment.

## Model

The notebook defaults to `{model}` (`COOKBOOK_MODEL` overrides it). The Managed Agents documentation lists it as a supported model; the repository's model audit list predates it, so the audit may flag it as unknown. It is an undated alias, so the dated-model check passes.

## How it was tested (offline, no API key)

- The notebook ran top to bottom under nbval against a local fake of the Managed Agents API that replays a scripted session with the SDK's strict response validation, plus failure scenarios (dropped and stalled streams, every stop reason, an interrupt mid-turn, a second cleanup).
- This build's files passed the repository's checks, run here in the repository's layout: ruff 0.14.6 (`ruff check` and `ruff format --check`) with the repository's settings, the notebook structure tests (valid nbformat 4, Python kernelspec, execution counts 1..N, no empty cells, no errors, no keys, no dated model ids, the attribution tag for `{STEM}.ipynb`), and the registry entry's fields.
- The notebook, copied alone into an empty folder, was run in a fresh virtual environment with only Jupyter's executor (nbclient and ipykernel) and no key: the first cell installed the requirements and the setup cell stopped with one sentence; run from the repository's root it says the same; run from `{FOLDER}/` without a key it says which variable to set.
- It has not been run against the live API: a maintainer's run with a key is its first live run.

## The stored outputs are scripted

The outputs committed in the notebook come from that scripted session, not from a live one, and the notebook says so under its title: the agent's messages and tool calls were written by hand; every tool result and file comes from really running those tool calls on the files the notebook uploads. A live run differs in wording, timing and cost; rerunning the notebook with a key replaces them.
"""


def fence(text: str, lang: str = "") -> str:
    """A fenced block whose fence is longer than any backtick run inside it."""
    ticks = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`{3,}", text))])
    return f"{ticks}{lang}\n{text.rstrip(chr(10))}\n{ticks}\n"


def shown_text(output: dict) -> str | None:
    """What the site shows of an output: stream text and plain execute_result text, else None."""
    if output["output_type"] == "stream":
        return output["text"]
    if output["output_type"] == "execute_result":
        return output.get("data", {}).get("text/plain")
    return None


def render_markdown(nb: nbformat.NotebookNode) -> str:
    """The page as the site renders it: markdown verbatim, code fenced, printed text fenced."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source.rstrip("\n") + "\n")
        elif cell.cell_type == "code":
            parts.append(fence(cell.source, "python"))
            parts += [fence(t) for t in map(shown_text, cell.outputs) if t is not None]
    return "\n".join(parts)


def author_and_date(env: Mapping[str, str]) -> tuple[str, str]:
    author = env.get("SITE_AUTHOR", "")
    date = env.get("SITE_DATE", datetime.date.today().isoformat())
    if not author:
        raise SystemExit(
            "SITE_AUTHOR is not set: run `SITE_AUTHOR=<your GitHub handle> make site`"
            " (the registry entry and the authors.yaml entry name you)."
        )
    if not HANDLE.match(author) or not DATE.match(date):
        raise SystemExit(
            f"SITE_AUTHOR must be a GitHub handle, SITE_DATE YYYY-MM-DD: {author} {date}"
        )
    return author, date


def build(
    out: Path, notebook: Path = NOTEBOOK, env: Mapping[str, str] = os.environ, helper: Path = HELPER
) -> list[Path]:
    """Write the pull request and the rendered page under `out`; return the files written."""
    author, date = author_and_date(env)
    if problems := description_problems(DESCRIPTION):
        raise SystemExit(f"the registry description: {'; '.join(problems)}")
    nb = publish_notebook(nbformat.read(notebook, as_version=4))
    heading = title(nb)
    texts = {  # everything is worked out and checked before anything is written
        SITE_NOTEBOOK: nbformat.writes(nb) + "\n",
        SITE_HELPER: publish_helper(helper.read_text(encoding="utf-8")),
        **{f"{FOLDER}/{DATA}/{n}": (FIXTURES / n).read_text(encoding="utf-8") for n in DATA_FILES},
        "registry.yaml": registry_yaml(heading, author, date),
        "authors.yaml": authors_yaml(author, env),
        PULL_REQUEST: pull_request(nb, heading, author),
        PAGE: render_markdown(nb),
    }
    published = [SITE_NOTEBOOK, SITE_HELPER, *(f"{FOLDER}/{DATA}/{n}" for n in DATA_FILES)]
    left = [f"{name}: {hit}" for name in published for hit in leftovers(texts[name])]
    if left:
        raise SystemExit("names the repository lacks are left:\n" + "\n".join(left))
    json.loads(texts[SITE_NOTEBOOK])  # a notebook file that parses
    for name, text in texts.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in texts]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else ROOT / "build" / "site"
    author_and_date(os.environ)  # fail before removing an earlier build
    if not args and out.exists():
        shutil.rmtree(out)  # only the default folder, which holds nothing but the last build
    out.mkdir(parents=True, exist_ok=True)
    for path in build(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
