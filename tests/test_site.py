"""`make site`: the contribution's layout and registry entry, and the page as the cookbook site shows
it (only printed output is shown; a single newline in markdown is a hard line break)."""

from __future__ import annotations

import re

import nbformat
import pytest
import yaml  # PyYAML comes with jupyter (jupyter-events); only the tests read YAML

from tests import site
from tests.replay import FIXTURES, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette

ENV = {"SITE_AUTHOR": "octocat", "SITE_DATE": "2026-05-01", "SITE_AUTHOR_NAME": "O'Cat: #1"}
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


# --- the built contribution ---


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    site.build(out, env=ENV)
    return out


@pytest.fixture(scope="module")
def notebook(built):
    return nbformat.read(built / site.FOLDER / f"{site.NAME}.ipynb", as_version=4)


def test_layout(built):
    data = f"{site.FOLDER}/{site.DATA}"
    expected = [f"{site.FOLDER}/{site.NAME}.ipynb", f"{data}/calc.py", f"{data}/test_calc.py"]
    expected += ["registry.yaml", "authors.yaml", f"{site.NAME}.md"]
    assert [p for p in expected if not (built / p).is_file()] == []
    assert (built / data / "calc.py").read_text() == (FIXTURES / "calc.py").read_text()
    helper = built / site.FOLDER / site.HELPER.name
    assert helper.is_file() == site.HELPER.is_file()
    if helper.is_file():
        assert helper.read_text() == site.HELPER.read_text()
        assert "fixtures/" not in helper.read_text(), "the helper module points at fixtures/"


def test_registry_entry(built, notebook):
    [entry] = yaml.safe_load((built / "registry.yaml").read_text())
    assert list(entry) == REGISTRY_KEYS
    assert entry["categories"] == ["Claude Managed Agents"]
    assert entry["path"] == f"managed_agents/{site.NAME}.ipynb"
    assert entry["authors"] == ["octocat"] and entry["date"] == "2026-05-01"
    assert isinstance(entry["date"], str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"])
    first = notebook.cells[0].source.splitlines()[0]
    assert entry["title"] == first.lstrip("# ") and entry["title"]
    assert 0 < len(entry["description"]) <= 200 and "\n" not in entry["description"]
    authors = yaml.safe_load((built / "authors.yaml").read_text())
    assert list(authors) == ["octocat"] and authors["octocat"]["name"] == "O'Cat: #1"
    assert list(authors["octocat"]) == ["name", "website", "avatar"]


def test_defaults_are_a_placeholder_author_and_today(tmp_path):
    site.build(tmp_path, env={})
    [entry] = yaml.safe_load((tmp_path / "registry.yaml").read_text())
    assert entry["authors"] == [site.PLACEHOLDER_AUTHOR]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"])


def test_description_is_cut_at_a_word_boundary():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\n" + "word " * 80)])
    title, description = site.title_and_description(nb)
    assert title == "T" and len(description) <= 200 and description.endswith("word…")


def test_data_path_is_rewritten(notebook):
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert any('CALC_DIR = Path("example_data/iterate_failing_tests")' in s for s in code)
    assert [s[:60] for s in code if "fixtures/" in s] == []


@pytest.mark.parametrize("copies", [0, 2])
def test_rewrite_fails_unless_there_is_one_data_line(tmp_path, copies):
    line = 'CALC_DIR = Path("fixtures/calc")\n'
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(line * copies)])
    with pytest.raises(SystemExit, match=f"found {copies}"):
        site.rewrite_data_path(nb)


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


# --- the page as the site shows it ---


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
    return printed((built / f"{site.NAME}.md").read_text(encoding="utf-8"))


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
