"""The helper's mutation score, by a real mutation tool: mutmut over watch_and_verify.py.

`python -m tests.mutation_score [PATTERN ...]` runs `mutmut run` (on the mutants whose names
match the patterns, e.g. `watch_and_verify.x_fix_report*`; all of them without any), reads every
mutant's status from `mutmut results --all true`, and prints the score:

    caught ÷ (generated − equivalent)

where a mutant is caught when the unit tests fail on it (killed) or hang on it (timeout), and an
equivalent mutant is one listed in tests/equivalent_mutants.md: a change no test could see,
because the code behaves the same, each with the line it changes and one line why. A listed
mutant whose change no longer matches what `mutmut show` says is stale: the list must be
redone, and the run fails. It fails too below SCORE (90 %), and lists the survivors. See a
survivor's change with `.venv/bin/mutmut show <name>`, and all of them with `mutmut browse`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [str(ROOT / ".venv" / "bin" / "mutmut")]
EQUIVALENT = ROOT / "tests" / "equivalent_mutants.md"
SCORE = 0.90
CAUGHT = ("killed", "timeout")
# A row of the equivalents table: | `name` | `the changed line, as mutmut shows it` | why |
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*`(.+)`\s*\|\s*(.+?)\s*\|\s*$")


def statuses() -> dict[str, str]:
    """Every mutant mutmut knows, with its status (killed, survived, timeout, no tests...)."""
    done = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    )
    found = {}
    for line in done.stdout.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep and name.startswith("watch_and_verify."):
            found[name] = status
    return found


def equivalents(path: Path = EQUIVALENT) -> dict[str, str]:
    """The mutants judged equivalent: name -> the changed line (as `mutmut show` prints it)."""
    rows = (ROW.match(line) for line in path.read_text(encoding="utf-8").splitlines())
    return {row[1]: row[2] for row in rows if row and row[1] != "mutant"}


def change(name: str) -> str:
    """The line a mutant adds, as `mutmut show` prints it (without the leading +); a line it
    removes as `(removed) line`; for a changed default value (which `mutmut show` does not
    print), the mutated `def` line."""
    shown = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True)
    added = [line[1:].strip() for line in shown.stdout.splitlines() if line.startswith("+ ")]
    removed = [line[1:].strip() for line in shown.stdout.splitlines() if line.startswith("- ")]
    if added:
        return added[0]
    if removed:
        return f"(removed) {removed[0]}"
    mangled = name.split(".", 1)[1]
    mutants = (ROOT / "mutants" / "watch_and_verify.py").read_text(encoding="utf-8")
    return next(
        (
            line.strip()
            for line in mutants.splitlines()
            if line.strip().startswith(f"def {mangled}(")
        ),
        "",
    )


def score(found: dict[str, str], equivalent: set[str]) -> tuple[int, int]:
    """(caught, counted): counted is every mutant but the equivalent ones."""
    counted = [name for name in found if name not in equivalent]
    return sum(found[name] in CAUGHT for name in counted), len(counted)


def problems(found: dict[str, str], listed: dict[str, str]) -> list[str]:
    """Listed equivalents that are stale: their mutant makes another change now (the code moved,
    and mutmut numbers its mutants anew). One the tests caught is counted as caught, not as
    equivalent, and is no problem: mutmut sometimes mislabels a mutant whose tests start
    processes, in either direction."""
    wrong = []
    for name, line in listed.items():
        if name in found and (now := change(name)) != line:
            wrong.append(f"{name} is listed for `{line}` but changes `{now}` now: redo the list")
    return wrong


def main(patterns: list[str]) -> int:
    run = subprocess.run([*MUTMUT, "run", *patterns], cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
        return 1
    found = statuses()
    if patterns:  # only the mutants this run asked for
        wanted = [re.compile(re.escape(p).replace(r"\*", ".*")) for p in patterns]
        found = {n: s for n, s in found.items() if any(w.fullmatch(n) for w in wanted)}
    listed = equivalents()
    equivalent = {name for name in listed if name in found and found[name] not in CAUGHT}
    caught, counted = score(found, equivalent)
    survivors = sorted(n for n, s in found.items() if s not in CAUGHT and n not in equivalent)
    counts = {s: list(found.values()).count(s) for s in sorted(set(found.values()))}
    print(f"mutmut over watch_and_verify.py{' (' + ', '.join(patterns) + ')' if patterns else ''}:")
    print(f"  {len(found)} mutants: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"  {len(equivalent)} judged equivalent (each with its reason: {EQUIVALENT.name})")
    print(
        f"  score: {caught} caught of {counted} = {caught / max(counted, 1):.1%} (at least {SCORE:.0%})"
    )
    for name in survivors:
        print(f"  not caught: {name} ({found[name]}): `{change(name)}`")
    stale = problems(found, listed)
    print("".join(f"  STALE: {problem}\n" for problem in stale), end="")
    return 0 if caught >= SCORE * counted and not stale else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
