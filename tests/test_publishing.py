"""The cookbook repository's notebook checks (anthropics/claude-cookbooks tests/notebook_tests), and
the site's, as small rules over a notebook dict; each rule returns its problems, [] when it holds.

`notebook_problems(path)` runs them all on any notebook file (the committed one, or build/site's
copy). Every rule is shown failing on a deliberately broken notebook, and passing on a good one.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

from tests import site

KEY_PATTERNS = [  # upstream tests/notebook_tests/utils.py API_KEY_PATTERNS
    re.compile(r"sk-ant-[a-zA-Z0-9\-_]{20,}"),
    re.compile(r"['\"]ANTHROPIC_API_KEY['\"]\s*[=:]\s*['\"][^'\"]+['\"]"),
]
DATED_MODEL = re.compile(r"(?<!anthropic\.)claude-[a-z0-9-]+-\d{8}")
MAX_CELL_LINES = 40
LIVE_VIEW = "Live view"


def text(value: str | list[str] | None) -> str:
    """A notebook string, stored either whole or as a list of lines."""
    return "".join(value) if isinstance(value, list) else value or ""


def code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]


def outputs(nb: dict):
    """(cell index, output) for every output."""
    return [(i, out) for i, cell in code_cells(nb) for out in cell.get("outputs", [])]


def output_text(out: dict) -> str:
    parts = [out.get("text"), *out.get("data", {}).values(), out.get("traceback")]
    return "".join(text(p) if not isinstance(p, dict) else json.dumps(p) for p in parts)


def valid_structure(nb: dict) -> list[str]:
    """nbformat >= 4, valid against the nbformat schema, and at least one code cell."""
    if not isinstance(nb.get("nbformat"), int) or nb["nbformat"] < 4:
        return [f"nbformat {nb.get('nbformat')!r} is older than 4"]
    try:
        nbformat.validate(copy.deepcopy(nb))
    except nbformat.ValidationError as err:
        return [f"not a valid notebook: {err.message[:200]}"]
    return [] if code_cells(nb) else ["no code cells"]


def python_kernel(nb: dict) -> list[str]:
    spec = nb.get("metadata", {}).get("kernelspec", {})
    if (spec.get("name"), spec.get("language")) != ("python3", "python"):
        return [f"kernelspec is {spec}, not name python3 / language python"]
    return []


def executed_in_order(nb: dict) -> list[str]:
    """Every non-empty code cell executed; execution counts exactly 1..N in cell order."""
    counts = [c.get("execution_count") for _, c in code_cells(nb) if text(c.get("source")).strip()]
    if counts != list(range(1, len(counts) + 1)):
        return [f"execution counts are {counts}, not 1..{len(counts)}"]
    return []


def no_empty_cells(nb: dict) -> list[str]:
    cells = enumerate(nb.get("cells", []))
    return [f"cell {i}: empty" for i, c in cells if not text(c.get("source")).strip()]


def no_error_outputs(nb: dict) -> list[str]:
    return [f"cell {i}: error output" for i, out in outputs(nb) if out["output_type"] == "error"]


def no_stderr(nb: dict) -> list[str]:
    return [
        f"cell {i}: stderr output"
        for i, out in outputs(nb)
        if out["output_type"] == "stream" and out.get("name") == "stderr"
    ]


def no_keys(nb: dict) -> list[str]:
    """No API-key-like strings in code or outputs, and no `api_key="sk-` in code."""
    places = [(i, text(c.get("source"))) for i, c in code_cells(nb)]
    places += [(i, output_text(out)) for i, out in outputs(nb)]
    problems = [
        f"cell {i}: key-like string ({p.pattern[:12]}…)"
        for i, s in places
        for p in KEY_PATTERNS
        if p.search(s)
    ]
    return problems + [
        f"cell {i}: api_key set to a literal key"
        for i, c in code_cells(nb)
        if re.search(r"""api_key=["']sk-""", text(c.get("source")))
    ]


def no_dated_models(nb: dict) -> list[str]:
    return [
        f"cell {i}: dated model id {m}"
        for i, c in code_cells(nb)
        for m in DATED_MODEL.findall(text(c.get("source")))
    ]


def attribution(nb: dict, stem: str = site.NAME) -> list[str]:
    """Every `agents.create(` passes metadata={"anthropic_cookbook": "claude-cookbooks/<slug>"},
    the slug made from the file name (`site.slug`) and of the shape the repository counts."""
    expected = f"claude-cookbooks/{site.slug(stem)}"
    creates = any("agents.create" in text(c.get("source")) for _, c in code_cells(nb))
    problems = []
    if creates and not site.SLUG_SHAPE.fullmatch(site.slug(stem)):
        problems.append(f"the file name makes a bad slug: {site.slug(stem)!r}")
    for i, cell in code_cells(nb):
        source = text(cell.get("source"))
        if "agents.create" not in source:
            continue
        try:  # IPython magics and shell escapes are not Python
            tree = ast.parse(re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M))
        except SyntaxError as err:
            problems.append(f"cell {i}: cannot parse ({err.msg})")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("agents.create"):
                meta = next((k.value for k in node.keywords if k.arg == "metadata"), None)
                try:
                    value = ast.literal_eval(meta) if meta is not None else None
                except ValueError:
                    value = None
                tag = value.get("anthropic_cookbook") if isinstance(value, dict) else None
                if tag != expected:
                    got = "no metadata" if meta is None else f"metadata={ast.unparse(meta)[:80]}"
                    want = f"{{'anthropic_cookbook': '{expected}'}}"
                    problems.append(f"cell {i}, line {node.lineno}: {got}, expected {want}")
    return problems


def small_cells(nb: dict) -> list[str]:
    """Every visible code cell (not metadata.jupyter.source_hidden) under MAX_CELL_LINES lines."""
    return [
        f"cell {i}: {n} lines"
        for i, c in code_cells(nb)
        if not c.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        and (n := len(text(c.get("source")).splitlines())) >= MAX_CELL_LINES
    ]


def printed_outputs(nb: dict) -> list[str]:
    """Outputs are stream or execute_result, except one live-view display_data in its cell."""
    problems = []
    for i, cell in code_cells(nb):
        outs = cell.get("outputs", [])
        live = [
            o
            for o in outs
            if o["output_type"] == "display_data"
            and text(o.get("data", {}).get("text/plain")).startswith(LIVE_VIEW)
        ]
        other = [o for o in outs if o["output_type"] not in ("stream", "execute_result", "error")]
        if len(live) > 1:
            problems.append(f"cell {i}: {len(live)} live views")
        problems += [f"cell {i}: {o['output_type']} output" for o in other if o not in live]
    return problems


RULES = [
    valid_structure,
    python_kernel,
    executed_in_order,
    no_empty_cells,
    no_error_outputs,
    no_stderr,
    no_keys,
    no_dated_models,
    attribution,
    small_cells,
    printed_outputs,
]


def notebook_problems(path: Path) -> list[str]:
    """Every rule on the notebook at `path` (its slug from the file name), as 'rule: problem'."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [f"valid_json: {err}"]
    return [
        f"{rule.__name__}: {problem}"
        for rule in RULES
        for problem in (attribution(nb, Path(path).stem) if rule is attribution else rule(nb))
    ]


# --- the committed notebook, and the site's copy ---


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_committed_notebook(rule):
    problems = rule(json.loads(site.NOTEBOOK.read_text(encoding="utf-8")))
    assert not problems, problems


def test_site_copy(tmp_path):
    """The site's copy, under the repository's name for it (its attribution slug comes from it)."""
    notebook = next(
        p for p in site.build(tmp_path, env={"SITE_AUTHOR": "octocat"}) if p.suffix == ".ipynb"
    )
    assert notebook.relative_to(tmp_path).as_posix() == site.SITE_NOTEBOOK
    problems = notebook_problems(notebook)
    assert not problems, problems


# --- every rule holds on a good notebook, and catches a broken one ---


def good() -> dict:
    """A small notebook that passes every rule."""
    v4 = nbformat.v4
    create = (
        "%load_ext autoreload\n"
        "agent = client.beta.agents.create(\n"
        '    name="x", model="claude-sonnet-4-6",  # not anthropic.claude-3-haiku-20240307-v1:0\n'
        '    metadata={"anthropic_cookbook": "claude-cookbooks/iterate-failing-tests"},\n'
        ")\nprint(agent.id)"
    )
    live = v4.new_output("display_data", {"text/plain": "Live view of the session"})
    nb = v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Py"}},
        cells=[
            v4.new_markdown_cell("# Title"),
            v4.new_code_cell(
                create, execution_count=1, outputs=[v4.new_output("stream", text="a")]
            ),
            v4.new_code_cell("view = LiveView()\ndisplay(view)", execution_count=2, outputs=[live]),
            v4.new_code_cell(
                "1 + 1",
                execution_count=3,
                outputs=[v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)],
            ),
            v4.new_code_cell(
                "x = 1\n" * 60, execution_count=4, metadata={"jupyter": {"source_hidden": True}}
            ),
        ],
    )
    return json.loads(json.dumps(nb))  # a plain dict, as read from disk


def cell(nb: dict, i: int, **changes) -> dict:
    nb["cells"][i].update(changes)
    return nb


def add_output(nb: dict, i: int, output: dict) -> dict:
    nb["cells"][i]["outputs"].append(output)
    return nb


def renumber(nb: dict, first: int) -> dict:
    for n, (_, c) in enumerate(code_cells(nb), first):
        c["execution_count"] = n
    return nb


def replace(nb: dict, i: int, old: str, new: str) -> dict:
    return cell(nb, i, source=text(nb["cells"][i]["source"]).replace(old, new))


def add_code(nb: dict, source: str) -> dict:
    count = len(code_cells(nb)) + 1
    nb["cells"].append(nbformat.v4.new_code_cell(source, execution_count=count))
    return nb


KEY = "sk-" + "ant-" + "a1B2" * 6  # assembled, so no key-shaped literal sits in this file
new = nbformat.v4.new_output
P = pytest.param
BROKEN = [
    P(valid_structure, lambda nb: {**nb, "nbformat": 3}, id="nbformat-3"),
    P(valid_structure, lambda nb: cell(nb, 0, cell_type="heading"), id="schema-invalid"),
    P(valid_structure, lambda nb: {**nb, "cells": nb["cells"][:1]}, id="no-code-cells"),
    P(python_kernel, lambda nb: {**nb, "metadata": {}}, id="no-kernelspec"),
    P(python_kernel, lambda nb: {**nb, "metadata": {"kernelspec": {"name": "ir"}}}, id="r-kernel"),
    P(executed_in_order, lambda nb: cell(nb, 2, execution_count=None), id="unexecuted"),
    P(executed_in_order, lambda nb: cell(nb, 1, execution_count=5), id="out-of-order"),
    P(executed_in_order, lambda nb: renumber(nb, 2), id="starts-at-2"),
    P(no_empty_cells, lambda nb: cell(nb, 0, source=["\n", "  "]), id="empty-markdown"),
    P(no_empty_cells, lambda nb: add_code(nb, ""), id="empty-code"),
    P(no_error_outputs, lambda nb: add_output(nb, 1, new("error", traceback=[])), id="error"),
    P(no_stderr, lambda nb: add_output(nb, 1, new("stream", name="stderr", text="!")), id="stderr"),
    P(no_keys, lambda nb: cell(nb, 1, source=f'key = "{KEY}"'), id="key-in-code"),
    P(no_keys, lambda nb: add_output(nb, 1, new("stream", text=KEY)), id="key-in-output"),
    P(no_keys, lambda nb: cell(nb, 1, source='e = {"ANTHROPIC_API_KEY": "x"}'), id="key-assigned"),
    P(no_keys, lambda nb: cell(nb, 1, source='Anthropic(api_key="sk-x")'), id="api-key-literal"),
    P(
        no_dated_models,
        lambda nb: cell(nb, 3, source='"claude-opus-4-1-20250805"'),
        id="dated-model",
    ),
    P(attribution, lambda nb: cell(nb, 1, source="agents.create(name='x')"), id="no-metadata"),
    P(
        attribution,
        lambda nb: cell(nb, 1, source="agents.create(metadata=M)"),
        id="metadata-variable",
    ),
    P(attribution, lambda nb: replace(nb, 1, "iterate-", "it-"), id="wrong-slug"),
    P(attribution, lambda nb: cell(nb, 1, source="agents.create(\n"), id="unparsable"),
    P(small_cells, lambda nb: cell(nb, 4, metadata={}), id="big-visible-cell"),
    P(
        printed_outputs,
        lambda nb: add_output(nb, 1, new("display_data", {"text/html": "<b>"})),
        id="rich-output",
    ),
    P(
        printed_outputs,
        lambda nb: add_output(nb, 2, nb["cells"][2]["outputs"][0]),
        id="two-live-views",
    ),
]


def test_good_notebook_passes_every_rule(tmp_path):
    path = tmp_path / "iterate_failing_tests.ipynb"
    path.write_text(json.dumps(good()))
    assert notebook_problems(path) == []


@pytest.mark.parametrize(("rule", "breaker"), BROKEN)
def test_rule_catches_a_broken_notebook(rule, breaker):
    assert rule(good()) == []
    assert rule(breaker(good())), f"{rule.__name__} missed the breakage"


def test_invalid_json_is_caught(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [')
    assert notebook_problems(path)[0].startswith("valid_json:")


def test_slug_comes_from_the_file_name(tmp_path):
    path = tmp_path / "Another Notebook.ipynb"
    path.write_text(json.dumps(good()))
    assert [p for p in notebook_problems(path) if "claude-cookbooks/another-notebook" in p]


def test_a_file_name_that_makes_a_bad_slug_is_caught(tmp_path):
    path = tmp_path / f"{'x' * 65}.ipynb"  # longer than the 64 characters a slug may have
    path.write_text(json.dumps(good()))
    assert [p for p in notebook_problems(path) if "bad slug" in p]
