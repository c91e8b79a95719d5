"""`make bench`: what the cookbook costs, measured and printed side by side (never asserted).

1. The whole test suite (`make test`'s pytest), once: its wall time.
2. nbval on the notebook against the fake vs the floor (nbval on a notebook whose only cell
   imports anthropic and ipywidgets): the same pytest, plugin and kernel start-up, so the
   ratio is the cost of the cookbook itself.
3. The live view (watch_and_verify.SessionView) fed 1,000 and 10,000 synthetic events cut from the shipped
   cassette's streams: time per event should stay flat, so the 10k/1k ratio should be near 10.
4. What a long turn sends to the browser: widget messages per event for 3,000 events arriving at
   the recorded pace (a simulated clock, so previews coalesce as they would live).
5. The fake itself: a JSON answer on a kept-alive connection (Nagle plus a delayed ACK would make
   it ~40 ms), and starting and stopping a server (a default 0.5 s poll would show in stop).
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import comm
import nbformat
from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents
from watch_and_verify import SessionView

from tests.lab import KERNELSPEC
from tests.notebook_runner import NOTEBOOK, nbval
from tests.replay import ROOT, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette
from tests.replay.server import ReplayServer
from tests.replay_fixtures import SESSION_ID, exchange, make_cassette, make_client, session_body

REPEATS = 3


def suite_seconds() -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"]
    subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - started


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
    nb.metadata.kernelspec = dict(KERNELSPEC)
    folder.mkdir(exist_ok=True)
    path = folder / "bench_floor.ipynb"
    nbformat.write(nb, path)
    return path


def synthetic_events(count: int) -> list[tuple[int, object]]:
    """`count` (delay_ms, event) pairs: the shipped turns repeated, ids made unique per round."""
    entries = [
        e for ex in Cassette.load(SHIPPED_CASSETTE).exchanges for e in ex["response"].get("sse", [])
    ]
    entries = [e for e in entries if "data" in e]
    events = []
    while len(events) < count:
        round_ = len(events) // len(entries)
        for entry in entries[: count - len(events)]:
            data = _renamed(entry["data"], f"r{round_}")
            events.append(
                (
                    entry["delay_ms"],
                    construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=data),
                )
            )
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
        view = SessionView()
        view.live("bench")
        gc.collect()  # each run starts from the same heap: a previous run's garbage is not its cost
        started = time.perf_counter()
        for _, ev in events:
            view.add(ev)
        runs.append(time.perf_counter() - started)
    return min(runs)


def messages_per_event(events: list) -> float:
    """Widget messages (comm open, update, close) a turn sends to the browser, per event."""
    sent = []
    original = comm.DummyComm.publish_msg
    comm.DummyComm.publish_msg = lambda self, msg_type, **kw: sent.append(msg_type)
    try:
        now = [0.0]
        view = SessionView(clock=lambda: now[0])
        view.live("bench")
        for delay_ms, ev in events:
            now[0] += delay_ms / 1000
            view.add(ev)
    finally:
        comm.DummyComm.publish_msg = original
    return len(sent) / len(events)


def fake_milliseconds() -> tuple[float, float, float]:
    """Median ms of a JSON answer, of start() with a first answer, and of stop()."""
    answers, starts, stops = [], [], []
    for _ in range(15):
        server = ReplayServer(
            make_cassette([exchange("GET", f"/v1/sessions/{SESSION_ID}", {"json": session_body()})])
        )
        started = time.perf_counter()
        server.start()
        with make_client(server) as client:
            client.beta.sessions.retrieve(SESSION_ID)
            starts.append(time.perf_counter() - started)
            began = time.perf_counter()
            client.beta.sessions.retrieve(SESSION_ID)  # the same connection, kept alive
            answers.append(time.perf_counter() - began)
        began = time.perf_counter()
        server.stop()
        stops.append(time.perf_counter() - began)
    return tuple(statistics.median(runs) * 1000 for runs in (answers, starts, stops))


def main() -> None:
    print("Benchmark (the suite once; medians of 3 nbval runs; best of 3 for the view)\n")
    print(f"{'make test (pytest, whole suite)':<40}{suite_seconds():8.1f} s")
    floor = nbval_seconds(floor_notebook(ROOT / "build"))
    notebook = nbval_seconds(NOTEBOOK)
    print(f"{'nbval, whole notebook vs fake':<40}{notebook:8.2f} s")
    print(f"{'nbval, floor (imports only)':<40}{floor:8.2f} s")
    print(f"{'ratio notebook / floor':<40}{notebook / floor:8.2f} x\n")
    small, large = view_seconds(synthetic_events(1_000)), view_seconds(synthetic_events(10_000))
    print(f"{'live view, 1,000 events':<40}{small:8.3f} s  ({small / 1_000 * 1e6:4.0f} µs/event)")
    print(f"{'live view, 10,000 events':<40}{large:8.3f} s  ({large / 10_000 * 1e6:4.0f} µs/event)")
    print(f"{'ratio 10k / 1k (linear = 10)':<40}{large / small:8.2f} x\n")
    print(
        f"{'widget messages per event, 3,000 events':<40}{messages_per_event(synthetic_events(3_000)):8.2f}\n"
    )
    answer, start, stop = fake_milliseconds()
    print(f"{'fake: a JSON answer (kept-alive)':<40}{answer:8.2f} ms")
    print(f"{'fake: start and first answer':<40}{start:8.2f} ms")
    print(f"{'fake: stop':<40}{stop:8.2f} ms")


if __name__ == "__main__":
    main()
