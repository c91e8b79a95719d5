"""The contribution to anthropics/claude-cookbooks, and the page as its site shows it: `make site`.

`python -m tests.site [OUT]` (default build/site) writes managed_agents/ (the notebook, its data path
pointed at example_data/, the helper module and the data), a registry.yaml entry, an authors.yaml
snippet, and iterate_failing_tests.md: the page as the site renders it (markdown, code, and only
printed text). Environment: SITE_AUTHOR (a GitHub handle), SITE_AUTHOR_NAME, SITE_AUTHOR_WEBSITE,
SITE_AUTHOR_AVATAR, SITE_DATE (YYYY-MM-DD, default today).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat

from tests.replay import FIXTURES, ROOT

NAME = "iterate_failing_tests"
NOTEBOOK = ROOT / f"{NAME}.ipynb"
HELPER = ROOT / "session_view.py"
FOLDER = "managed_agents"
DATA = f"example_data/{NAME}"
DATA_FILES = ("calc.py", "test_calc.py")
CATEGORY = "Claude Managed Agents"
PLACEHOLDER_AUTHOR = "your-github-handle"
DATA_LINE = re.compile(r"""^(\s*CALC_DIR\s*=\s*Path\()\s*(["'])fixtures/calc/?\2\s*\)""", re.M)
HANDLE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def rewrite_data_path(nb: nbformat.NotebookNode) -> None:
    """Point the one `CALC_DIR = Path("fixtures/calc")` line at the contribution's example_data."""
    hits = [c for c in nb.cells if c.cell_type == "code" for _ in DATA_LINE.finditer(c.source)]
    if len(hits) != 1:
        raise SystemExit(f'expected one `CALC_DIR = Path("fixtures/calc")` line, found {len(hits)}')
    hits[0].source = DATA_LINE.sub(rf'\1"{DATA}")', hits[0].source)


def plain(markdown: str) -> str:
    """Markdown as one line of plain text: link text kept, tags and emphasis marks dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"<[^>]+>|\*+|`+|(?<!\w)_+|_+(?!\w)", "", text)
    return " ".join(text.split())


def title_and_description(nb: nbformat.NotebookNode, limit: int = 200) -> tuple[str, str]:
    """The first H1, and the first paragraph under it (cut at a word boundary to `limit`)."""
    lines = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown").splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"#\s+\S", line)), None)
    if start is None:
        raise SystemExit("the notebook has no H1 title")
    rest = "\n".join(lines[start + 1 :]).strip()
    title, description = plain(lines[start].lstrip("#")), plain(re.split(r"\n\s*\n", rest)[0])
    if not description or description.startswith("#"):
        raise SystemExit("no paragraph under the notebook's H1 title")
    if len(description) > limit:
        description = description[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.") + "…"
    return title, description


def q(value: str) -> str:
    """A single-quoted YAML scalar on one line."""
    return "'" + " ".join(value.split()).replace("'", "''") + "'"


def registry_yaml(title: str, description: str, author: str, date: str) -> str:
    return (
        f"- title: {q(title)}\n  description: {q(description)}\n"
        f"  path: {q(f'{FOLDER}/{NAME}.ipynb')}\n  authors:\n  - {q(author)}\n"
        f"  date: {q(date)}\n  categories:\n  - {q(CATEGORY)}\n"
    )


def authors_yaml(author: str, env: Mapping[str, str]) -> str:
    name = env.get("SITE_AUTHOR_NAME", "Your Name")
    website = env.get("SITE_AUTHOR_WEBSITE", f"https://github.com/{author}")
    avatar = env.get("SITE_AUTHOR_AVATAR", f"https://github.com/{author}.png")
    return f"{author}:\n  name: {q(name)}\n  website: {q(website)}\n  avatar: {q(avatar)}\n"


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


def build(out: Path, notebook: Path = NOTEBOOK, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Write the contribution and the rendered page under `out`; return the files written."""
    author = env.get("SITE_AUTHOR", PLACEHOLDER_AUTHOR)
    date = env.get("SITE_DATE", datetime.date.today().isoformat())
    if not HANDLE.match(author) or not DATE.match(date):
        raise SystemExit(
            f"SITE_AUTHOR must be a GitHub handle, SITE_DATE YYYY-MM-DD: {author} {date}"
        )
    nb = nbformat.read(notebook, as_version=4)
    rewrite_data_path(nb)
    texts = {  # everything is worked out before anything is written
        f"{FOLDER}/{NAME}.ipynb": nbformat.writes(nb) + "\n",
        "registry.yaml": registry_yaml(*title_and_description(nb), author, date),
        "authors.yaml": authors_yaml(author, env),
        f"{NAME}.md": render_markdown(nb),
    }
    copies = {f"{FOLDER}/{DATA}/{name}": FIXTURES / name for name in DATA_FILES}
    if (helper := notebook.parent / HELPER.name).exists():
        copies[f"{FOLDER}/{helper.name}"] = helper
    (out / FOLDER / DATA).mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    for name, source in copies.items():
        shutil.copyfile(source, out / name)
    return [out / name for name in [*texts, *copies]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in build(Path(args[0]) if args else ROOT / "build" / "site"):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
