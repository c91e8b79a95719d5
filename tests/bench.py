"""`make bench`: what the notebook costs against the fake, and how the live view scales.

1. nbval on the notebook against the fake vs the floor (nbval on a notebook whose only cell
   imports anthropic and ipywidgets): the same pytest, plugin and kernel start-up, so the
   ratio is the cost of the cookbook itself.
2. The live view (the notebook's `live-view` cell, executed as is) fed 1,000 and 10,000
   synthetic events cut from the shipped cassette's stream: time per event should stay flat,
   so the 10k/1k ratio should be near 10, not near 100.
Figures are printed, not asserted: timing belongs in a report, not in a test that flakes.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import nbformat
from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from tests.notebook_runner import NOTEBOOK, live_view_cell, nbval
from tests.replay import ROOT, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette

REPEATS = 3


def nbval_seconds(notebook: Path) -> float:
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        assert nbval(notebook).returncode == 0, f"nbval failed on {notebook.name}"
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def floor_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import anthropic\nimport ipywidgets")]
    )
    nb.metadata.kernelspec = {"display_name": "Python 3", "language": "python", "name": "python3"}
    folder.mkdir(exist_ok=True)
    path = folder / "bench_floor.ipynb"
    nbformat.write(nb, path)
    return path


def synthetic_events(count: int) -> list:
    """`count` events: the shipped turn repeated, with fresh ids so nothing is de-duplicated."""
    stream = next(
        ex["response"]["sse"]
        for ex in Cassette.load(SHIPPED_CASSETTE).exchanges
        if "sse" in ex["response"]
    )
    events = []
    while len(events) < count:
        round_ = len(events) // len(stream)
        for item in stream[: count - len(events)]:
            data = _renamed(item["data"], f"r{round_}")
            events.append(construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=data))
    return events


def _renamed(value, suffix: str):
    if isinstance(value, dict):
        return {k: _renamed(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, suffix) for v in value]
    return f"{value}{suffix}" if isinstance(value, str) and value.startswith("sevt_") else value


def view_seconds(events: list) -> float:
    runs = []
    for _ in range(REPEATS):
        view = live_view_cell()["LiveView"]()
        gc.collect()  # start each run from the same heap: a previous run's garbage is not this run's cost
        started = time.perf_counter()
        for ev in events:
            view.add(ev)
        view.finish("end_turn")
        runs.append(time.perf_counter() - started)
    return min(runs)


def main() -> None:
    print("Benchmark (medians of 3 nbval runs; best of 3 for the view)\n")
    floor = nbval_seconds(floor_notebook(ROOT / "build"))
    notebook = nbval_seconds(NOTEBOOK)
    print(f"{'nbval, whole notebook vs fake':<36}{notebook:8.2f} s")
    print(f"{'nbval, floor (imports only)':<36}{floor:8.2f} s")
    print(f"{'ratio notebook / floor':<36}{notebook / floor:8.2f} x\n")
    small, large = view_seconds(synthetic_events(1_000)), view_seconds(synthetic_events(10_000))
    print(f"{'live view, 1,000 events':<36}{small:8.3f} s  ({small / 1_000 * 1e6:4.0f} µs/event)")
    print(f"{'live view, 10,000 events':<36}{large:8.3f} s  ({large / 10_000 * 1e6:4.0f} µs/event)")
    print(f"{'ratio 10k / 1k (linear = 10)':<36}{large / small:8.2f} x")


if __name__ == "__main__":
    main()
