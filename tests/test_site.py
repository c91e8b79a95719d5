"""`make site`: the pull request that replaces the cookbook repository's
managed_agents/CMA_iterate_fix_failing_tests.ipynb (layout, rewrites, registry entry, PULL_REQUEST.md),
the repository's lint run in its own layout, and the page as the cookbook site shows it (only printed
output is shown; a single newline in markdown is a hard line break)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml  # PyYAML comes with jupyter (jupyter-events); only the tests read YAML

from tests import site
from tests.replay import FIXTURES, ROOT, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette

ENV = {"SITE_AUTHOR": "octocat", "SITE_DATE": "2026-05-01", "SITE_AUTHOR_NAME": "O'Cat: #1"}
RUFF = Path(sys.executable).with_name("ruff")
RUFF_VERSION = "0.14.6"  # the repository's pre-commit pin
# The repository's ruff settings (its root pyproject.toml, as of 2026), for a lint run in its layout.
REPOSITORY_RUFF = {
    "line-length": 100,
    "target-version": "py311",
    "extend-include": ["*.ipynb"],
    "format": {"quote-style": "double", "indent-style": "space", "line-ending": "auto"},
    "lint": {
        "select": ["E", "F", "I", "W", "UP", "S", "B"],
        "ignore": ["E501", "S101", "S301", "S311", "S608"],
        "per-file-ignores": {"*.ipynb": ["E402", "F811"]},
    },
}
REGISTRY_KEYS = ["title", "description", "path", "authors", "date", "categories"]
REPORT_PREFIXES = ["Original tests: ", "Functions changed: ", "mean(): "]
BLOCK = re.compile(r"^\s*([-*+]\s|\d+\.\s|\||#|>|<|```)")  # the before-stop hook's `block`
LIST_ITEM = re.compile(r"^\s*([-*+]|\d+\.)\s")


# --- markdown that the site renders as written; each returns the offending lines ---


def hard_wraps(markdown: str) -> list[str]:
    """Paragraph lines followed by another non-blank line: the site makes each a hard break."""
    lines, fence, found = markdown.splitlines(), False, []
    for a, b in zip(lines, lines[1:], strict=False):
        fence ^= a.strip().startswith("```")
        if not fence and a.strip() and b.strip() and not BLOCK.match(a) and not BLOCK.match(b):
            found.append(a)
    return found


def indented_code(markdown: str) -> list[str]:
    """4-space-indented lines after a blank line, outside fences and lists: they do not render."""
    found, fence, in_list, after_blank = [], False, False, True
    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            fence, after_blank = not fence, False
        elif fence:
            continue
        elif not line.strip():
            after_blank = True
        else:
            indented = line.startswith(("    ", "\t"))
            if LIST_ITEM.match(line):
                in_list = True
            elif indented and after_blank and not in_list:
                found.append(line)
            elif not indented:
                in_list = False
            after_blank = False
    return found


def prose(markdown: str) -> str:
    """Markdown without fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S))


def relative_links(markdown: str) -> list[str]:
    """Link, image, src and href targets that are not https:// or #anchors, and attachments."""
    text = prose(markdown)
    targets = re.findall(r"\]\(\s*<?([^)\s>]*)", text)
    targets += re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", text)
    bad = [t for t in targets if not t.startswith(("https://", "#"))]
    return bad + (["attachment:"] if "attachment:" in text else [])


def open_imgs(markdown: str) -> list[str]:
    return [
        tag for tag in re.findall(r"<img\b[^>]*>", prose(markdown), re.I) if not tag.endswith("/>")
    ]


MARKDOWN_RULES = [hard_wraps, indented_code, relative_links, open_imgs]


@pytest.mark.parametrize(
    ("rule", "bad", "good"),
    [
        (
            hard_wraps,
            "A paragraph\nwrapped here.",
            "- a\n- b\n\n| a |\n| b |\n\n# T\ntext\n```\nx\ny\n```",
        ),
        (indented_code, "Text.\n\n    code()", "- item\n\n    more of the item\n\n```\n    x\n```"),
        (relative_links, "[next](other.ipynb)", "[a](https://x.org) [b](#step-1) `[c](d)`"),
        (relative_links, "![img](attachment:image.png)", '<img src="https://x.org/a.png"/>'),
        (relative_links, '<img src="pic.png"/>', "![i](https://x.org/i.png)"),
        (open_imgs, '<img src="https://x.org/a.png">', '<img src="https://x.org/a.png" />'),
    ],
)
def test_markdown_rule_catches_what_the_site_breaks(rule, bad, good):
    assert rule(bad)
    assert rule(good) == []


# --- the built pull request ---


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    site.build(out, env=ENV)
    return out


@pytest.fixture(scope="module")
def notebook(built):
    return nbformat.read(built / site.SITE_NOTEBOOK, as_version=4)


def code_of(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_layout(built):
    data = f"{site.FOLDER}/{site.DATA}"
    expected = [site.SITE_NOTEBOOK, site.SITE_HELPER, f"{data}/calc.py", f"{data}/test_calc.py"]
    expected += ["registry.yaml", "authors.yaml", site.PULL_REQUEST, site.PAGE]
    assert sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file()) == sorted(
        expected
    )
    assert site.SITE_NOTEBOOK == "managed_agents/CMA_iterate_fix_failing_tests.ipynb"
    assert data == "managed_agents/example_data/iterate"
    for name in site.DATA_FILES:
        assert (built / data / name).read_text() == (FIXTURES / name).read_text()


def test_helper_copy_differs_only_by_its_hint_and_the_notebooks_name(built):
    ours, theirs = site.HELPER.read_text(), (built / site.SITE_HELPER).read_text()
    assert re.search(r'^EXTRA_HINT = ""$', theirs, re.M), "the site's hint is not empty"
    assert not re.search(r"\bREPLAY_HINT\b", theirs)
    assert f"{site.STEM}.ipynb" in theirs
    changed = {line for line in theirs.splitlines()} ^ {line for line in ours.splitlines()}
    assert all(re.search(r"HINT|\.ipynb|^#", line) for line in changed), changed


def test_data_path_is_rewritten_in_code_and_markdown(notebook):
    assert 'CALC_DIR = Path("example_data/iterate")' in code_of(notebook)
    sources = [c.source for c in notebook.cells]
    assert [s[:60] for s in sources if "fixtures/" in s] == []
    prerequisites = next(s for s in sources if s.startswith("## Prerequisites"))
    assert "`example_data/iterate/`" in prerequisites


def test_prerequisites_lose_only_the_bullet_that_names_the_project(notebook):
    ours = nbformat.read(site.NOTEBOOK, as_version=4)
    before = next(c.source for c in ours.cells if c.source.startswith("## Prerequisites"))
    after = next(c.source for c in notebook.cells if c.source.startswith("## Prerequisites"))
    gone = set(before.replace(site.OUR_DATA, site.DATA).splitlines()) - set(after.splitlines())
    assert len(gone) <= 1 and all(site.ABSENT["make"].search(line) for line in gone), gone
    assert len(notebook.cells) == len(ours.cells)


def test_attribution_tag_is_the_slug_of_the_new_file_name(notebook):
    # The repository's rule: the file's stem, lowercased, each run of other characters a dash.
    assert site.SITE_TAG == "claude-cookbooks/cma-iterate-fix-failing-tests"
    assert site.SLUG_SHAPE.fullmatch(site.slug(site.STEM))
    code = code_of(notebook)
    assert site.TAG not in code
    # agents.create carries it, and the cleanup looks for it after a kernel restart
    assert f'{{"anthropic_cookbook": "{site.SITE_TAG}"}}' in code
    assert f'TAG = "{site.SITE_TAG}"' in code


def test_setup_sentences_read_right_in_the_repository(notebook):
    setup = next(c.source for c in notebook.cells if "UsageError(" in c.source)
    missing = re.search(r'UsageError\(\s*f"([^"]*)"', setup).group(1)
    missing = missing.replace("{CALC_DIR}", site.DATA).replace("{missing}", "No module named x")
    assert "watch_and_verify.py and example_data/iterate/ beside it" in missing
    assert "managed_agents/" in missing and site.leftovers(missing) == []
    no_key = re.search(r'Sentence\(\s*f"(No API key[^"]*)"', setup).group(1)
    assert no_key.endswith("restart the kernel.{EXTRA_HINT}") and "set ANTHROPIC_API_KEY" in no_key


@pytest.mark.parametrize(
    "text",
    [
        "opens it: `make lab`",
        "run make test first",
        "the Makefile",
        'Path("fixtures/calc")',
        "see tests/replay",
        "Without a key, the replay",
        "REPLAY_HINT",
        "the cassette",
        "from session_view import x",
        "in the project this notebook comes from",
        "iterate_failing_tests.ipynb",
    ],
)
def test_leftovers_catch_each_name_the_repository_lacks(text):
    assert site.leftovers(text)


def test_leftovers_let_plain_english_through():
    text = "Make the calc tests pass: make it green, then make tests. example_data/iterate"
    assert site.leftovers(text) == []


def test_published_files_name_nothing_the_repository_lacks(built):
    published = [site.SITE_NOTEBOOK, site.SITE_HELPER]
    published += [f"{site.FOLDER}/{site.DATA}/{name}" for name in site.DATA_FILES]
    found = {name: site.leftovers((built / name).read_text()) for name in published}
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_build_refuses_to_publish_a_leftover(tmp_path):
    nb = nbformat.read(site.NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("Run `python -m tests.replay serve` first."))
    nbformat.write(nb, tmp_path / "nb.ipynb")
    with pytest.raises(SystemExit, match="names the repository lacks"):
        site.build(tmp_path / "out", notebook=tmp_path / "nb.ipynb", env=ENV)
    assert not (tmp_path / "out").exists(), "something was written before the check"


@pytest.mark.parametrize("copies", [0, 2])
def test_rewrite_fails_unless_there_is_one_data_line(copies):
    line = 'CALC_DIR = Path("fixtures/calc")\n'
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(line * copies)])
    with pytest.raises(SystemExit, match=f"found {copies}"):
        site.rewrite_data_path(nb)


@pytest.mark.parametrize("copies", [0, 2])
def test_helper_rewrite_fails_unless_there_is_one_hint(copies):
    text = '# a comment\nREPLAY_HINT = " x"\n' * copies
    with pytest.raises(SystemExit, match=f"found {copies}"):
        site.publish_helper(text)


# --- the registry entry and the authors entry ---


def test_registry_entry(built, notebook):
    [entry] = yaml.safe_load((built / "registry.yaml").read_text())
    assert list(entry) == REGISTRY_KEYS
    assert entry["path"] == site.SITE_NOTEBOOK
    assert entry["authors"] == ["octocat"] and entry["date"] == "2026-05-01"
    assert isinstance(entry["date"], str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"])
    first = notebook.cells[0].source.splitlines()[0]
    assert entry["title"] == first.lstrip("# ") and entry["title"]
    assert site.description_problems(entry["description"]) == []
    assert 15 <= len(entry["description"].split()) <= 25
    categories = entry["categories"]
    assert categories[0] == "Claude Managed Agents" and len(set(categories)) >= 2
    assert set(categories) <= site.MANAGED_AGENTS_CATEGORIES
    authors = yaml.safe_load((built / "authors.yaml").read_text())
    assert list(authors) == ["octocat"] and authors["octocat"]["name"] == "O'Cat: #1"
    assert list(authors["octocat"]) == ["name", "website", "avatar"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Too short to say much at all.", "words"),
        ("word " * 26 + "end.", "words"),
        (
            "One sentence of enough words here. Then another sentence that adds more words to it.",
            "one",
        ),
        ("A sentence of enough words that just goes on and on without any final stop", "one"),
    ],
)
def test_description_rule_catches_a_bad_description(text, problem):
    assert any(problem in p for p in site.description_problems(text))


def test_author_is_required_and_the_date_defaults_to_today(tmp_path):
    with pytest.raises(SystemExit, match="SITE_AUTHOR is not set"):
        site.build(tmp_path, env={})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit, match="GitHub handle"):
        site.build(tmp_path, env={"SITE_AUTHOR": "not a handle"})
    site.build(tmp_path, env={"SITE_AUTHOR": "octocat"})
    [entry] = yaml.safe_load((tmp_path / "registry.yaml").read_text())
    assert entry["date"] == datetime.date.today().isoformat()


def test_make_site_without_an_author_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "tests.site", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "SITE_AUTHOR is not set" in run.stderr
    assert "Traceback" not in run.stderr


# --- PULL_REQUEST.md ---


@pytest.fixture(scope="module")
def pull_request(built):
    return (built / site.PULL_REQUEST).read_text()


def test_pull_request_says_what_it_replaces_and_how_to_raise_the_dependencies(
    pull_request, notebook
):
    assert f"`{site.SITE_NOTEBOOK}`" in pull_request.splitlines()[0]
    for heading in [
        "replaces",
        "changes for readers",
        "Dependencies",
        "Model",
        "tested",
        "scripted",
    ]:
        assert re.search(rf"^## .*{heading}", pull_request, re.M | re.I), heading
    pip = next(c.source for c in notebook.cells if "%pip install" in c.source)
    reqs = re.findall(r'"([^"]+)"', pip)
    assert any(r.startswith("anthropic>=") for r in reqs) and any("ipywidgets" in r for r in reqs)
    add = "uv add " + " ".join(f'"{r}"' for r in reqs)
    commands = re.search(r"```sh\n(.*?)```", pull_request, re.S).group(1).splitlines()
    assert commands == [add, f"cd {site.FOLDER} && {add}"]
    assert f"`{site.FOLDER}/{site.DATA}/calc.py`" in pull_request
    assert "registry.yaml" in pull_request and "authors.yaml" in pull_request


def test_pull_request_explains_the_model_testing_and_scripted_outputs(pull_request, notebook):
    model = re.search(r'"COOKBOOK_MODEL", "([^"]+)"', code_of(notebook)).group(1)
    model_section = pull_request.split("## Model", 1)[1].split("\n## ", 1)[0]
    assert f"`{model}`" in model_section and "audit" in model_section
    assert "supported" in model_section
    tested = pull_request.split("## How it was tested", 1)[1].split("\n## ", 1)[0]
    for fact in ["offline", "ruff 0.14.6", "structure", "registry", "fresh virtual environment"]:
        assert fact in tested, fact
    assert re.search(r"stored outputs are scripted", pull_request, re.I)
    assert site.leftovers(pull_request.split("## How it was tested")[0]) == []


# --- the repository's lint, run in its own layout ---


def ruff(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUFF), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def toml(value) -> str:
    return json.dumps(value)  # JSON strings, numbers and arrays are valid TOML values


def repository(root: Path) -> Path:
    """`root` as the repository's root: a pyproject.toml with the repository's ruff settings."""
    lines = ["[tool.ruff]"]
    lines += [f"{k} = {toml(v)}" for k, v in REPOSITORY_RUFF.items() if not isinstance(v, dict)]
    lines += ["[tool.ruff.format]"]
    lines += [f"{k} = {toml(v)}" for k, v in REPOSITORY_RUFF["format"].items()]
    lint = REPOSITORY_RUFF["lint"]
    lines += ["[tool.ruff.lint]", f"select = {toml(lint['select'])}"]
    lines += [f"ignore = {toml(lint['ignore'])}", "[tool.ruff.lint.per-file-ignores]"]
    lines += [f"{toml(k)} = {toml(v)}" for k, v in lint["per-file-ignores"].items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def repository_root(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(built / site.FOLDER, root / site.FOLDER)
    return repository(root)


def test_ruff_is_the_repositorys_version():
    assert ruff("--version", cwd=ROOT).stdout.split() == ["ruff", RUFF_VERSION]


def test_our_ruff_settings_are_the_repositorys():
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    theirs = REPOSITORY_RUFF
    assert {k: ours[k] for k in ("line-length", "target-version", "format")} == {
        k: theirs[k] for k in ("line-length", "target-version", "format")
    }
    assert ours["lint"]["select"] == theirs["lint"]["select"]
    assert ours["lint"]["ignore"] == theirs["lint"]["ignore"]
    assert (
        ours["lint"]["per-file-ignores"]["*.ipynb"] == theirs["lint"]["per-file-ignores"]["*.ipynb"]
    )
    assert ours["lint"]["isort"]["known-third-party"] == [site.HELPER.stem]


def test_site_passes_the_repositorys_ruff_check_in_its_layout(repository_root):
    run = ruff("check", "--no-cache", ".", cwd=repository_root)
    assert run.returncode == 0, run.stdout + run.stderr


def test_site_passes_the_repositorys_ruff_format_in_its_layout(repository_root):
    run = ruff("format", "--no-cache", "--check", "--diff", ".", cwd=repository_root)
    assert run.returncode == 0, run.stdout + run.stderr


IMPORTS = {  # the helper's import in the third-party block, or in a block of its own below it
    "third-party": "import anthropic\nfrom watch_and_verify import x\n\nprint(anthropic, x)\n",
    "own block": "import anthropic\n\nfrom watch_and_verify import x\n\nprint(anthropic, x)\n",
}


@pytest.mark.parametrize(
    ("where", "layout"),
    [("ours", "our root"), ("theirs", "managed_agents/")],
)
def test_both_lints_count_the_helper_as_third_party(where, layout, tmp_path):
    """Our `make lint` (the helper at our root) and the repository's (the helper in
    managed_agents/) accept the helper's import only in the third-party block."""
    if where == "ours":
        probe, cwd = ROOT / "probe.py", ROOT  # read from stdin: nothing is written in our tree
    else:
        root = repository(tmp_path)
        (root / site.FOLDER).mkdir()
        (root / site.SITE_HELPER).write_text("x = 1\n")
        probe, cwd = root / site.FOLDER / "probe.py", root
    results = {
        name: ruff("check", "--no-cache", "--stdin-filename", str(probe), "-", cwd=cwd, stdin=code)
        for name, code in IMPORTS.items()
    }
    assert results["third-party"].returncode == 0, results["third-party"].stdout
    assert "I001" in results["own block"].stdout, f"{layout}: a first-party block passed"


# --- the page as the site shows it ---


def test_rendering_keeps_only_printed_output():
    v4 = nbformat.v4
    outputs = [
        v4.new_output("stream", text="printed ``` fence\n"),
        v4.new_output("execute_result", {"text/plain": "42", "text/html": "<b>42</b>"}),
        v4.new_output("display_data", {"text/plain": "rich", "text/html": "<i>rich</i>"}),
    ]
    nb = v4.new_notebook(
        cells=[v4.new_markdown_cell("# T"), v4.new_code_cell("x", outputs=outputs)]
    )
    assert site.render_markdown(nb) == (
        "# T\n\n```python\nx\n```\n\n````\nprinted ``` fence\n````\n\n```\n42\n```\n"
    )


def collapse(text: str) -> str:
    return " ".join(text.split())


def printed(rendering: str) -> str:
    """The unlabelled fenced blocks of a rendering: what the page shows as output."""
    blocks = re.findall(r"^(`{3,})(\w*)\n(.*?)\n\1$", rendering, re.M | re.S)
    return "\n".join(body for _, lang, body in blocks if not lang)


def final_agent_message() -> str:
    """The text of the last agent.message the shipped cassette streams."""
    events = [
        entry.get("data")
        for ex in Cassette.load(SHIPPED_CASSETTE).exchanges
        for entry in ex["response"].get("sse", [])
    ]
    last = [e for e in events if isinstance(e, dict) and e.get("type") == "agent.message"][-1]
    return "".join(block.get("text", "") for block in last["content"])


@pytest.fixture(scope="module")
def shown(built):
    return printed((built / site.PAGE).read_text(encoding="utf-8"))


def test_page_shows_the_agents_final_message(shown):
    assert collapse(final_agent_message()) in collapse(shown), (
        "the page does not show the agent's final message: print the transcript (stream output)"
    )


def test_page_shows_the_before_after_table(shown):
    lines = shown.splitlines()
    assert any(s.startswith("test") and "before" in s and "after" in s for s in lines), (
        "no printed `test ... before ... after` header line"
    )
    names = re.findall(r"^def (test_\w+)", (FIXTURES / "test_calc.py").read_text(), re.M)
    assert [n for n in names if not re.search(rf"^{n}\b", shown, re.M)] == []


def test_page_shows_the_report_and_the_diff(notebook, shown):
    stream = "\n".join(
        o.text for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "stream"
    )
    assert [p for p in REPORT_PREFIXES if not re.search("^" + re.escape(p), stream, re.M)] == []
    assert re.search(r"^--- calc\.py \(original\)", shown, re.M)
    assert re.search(r"^\+\+\+ calc\.py \(agent\)", shown, re.M)


@pytest.mark.parametrize("rule", MARKDOWN_RULES, ids=lambda r: r.__name__)
def test_markdown_renders_as_written(notebook, rule):
    found = {i: rule(c.source) for i, c in enumerate(notebook.cells) if c.cell_type == "markdown"}
    assert {i: lines for i, lines in found.items() if lines} == {}
