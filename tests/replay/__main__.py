"""Command line: `python -m tests.replay serve|run|record|script ...`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from . import FIXTURES, SCENARIO_DIR, SHIPPED_CASSETTE, SHIPPED_SCRIPT, replay_env
from .cassette import CassetteError
from .server import ReplayServer, speed_from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.replay", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser(
        "serve",
        help="serve a cassette on loopback until Ctrl-C",
        description="Serve a cassette on loopback until Ctrl-C: strictly, in the recorded"
        " order, unless --interactive.",
    )
    serve.add_argument(
        "--interactive",
        action="store_true",
        help="as `run` does: also answer the order-free requests strict order refuses (the"
        " session's status, user.interrupt, archiving, the history so far, no outputs yet)",
    )
    run = verbs.add_parser(
        "run",
        help="serve a cassette interactively while a command runs (e.g. jupyter lab), "
        "then say what it did not play",
        description="Serve a cassette while a command runs (`make lab`: jupyter lab), then say"
        " what the last take did not play, for information. Interactively: a reader who"
        " interrupts a turn and runs the cells below still gets the answers that do not depend"
        " on the recorded order (the session's status, user.interrupt, archiving, the history"
        " streamed so far, no outputs yet), so the cleanup cell and the polling view work;"
        " anything else out of order is refused in one sentence.",
    )
    for p in (serve, run):
        p.add_argument(
            "--cassette",
            type=Path,
            default=Path(os.environ.get("REPLAY_CASSETTE") or SHIPPED_CASSETTE),
        )
        p.add_argument("--port", type=int, default=0)
        p.add_argument(
            "--speed",
            type=float,
            default=None,
            help="0 = no waiting, 1 = recorded pace (env REPLAY_SPEED)",
        )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments")

    record = verbs.add_parser(
        "record", help="record the live API through a loopback proxy into a cassette"
    )
    record.add_argument("--out", type=Path, required=True)
    record.add_argument("--upstream", default="https://api.anthropic.com")
    record.add_argument("--port", type=int, default=0)
    record.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="-- command to run through the proxy (else until Ctrl-C)",
    )

    script = verbs.add_parser(
        "script", help="generate a scripted cassette (real tool runs, no API key)"
    )
    script.add_argument("--script", type=Path, default=SHIPPED_SCRIPT)
    script.add_argument("--fixtures", type=Path, default=FIXTURES)
    script.add_argument(
        "--scenario",
        default=None,
        help="a failure scenario name, or 'all' (writes into --out as a folder)",
    )
    script.add_argument("--out", type=Path, default=None)

    args = parser.parse_args(argv)
    try:
        return {"serve": _serve, "run": _run, "record": _record, "script": _script}[args.verb](args)
    except CassetteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    with ReplayServer(
        args.cassette, port=args.port, speed=_speed(args), interactive=args.interactive
    ) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(fake.unplayed_report() or "Every exchange was played.", file=sys.stderr)
        if order_free := fake.order_free_report():
            print(order_free, file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    """Interactive: a reader may stop anywhere or run the story again (each restart is a new
    take), so what the last take left unplayed is information, and the exit code is the
    command's own. A reader who interrupts a turn and runs the cells below still gets the
    answers that do not depend on the story's order (the server's interactive mode): the
    cleanup cell can interrupt and archive, the polling view shows what was streamed."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with ReplayServer(args.cassette, port=args.port, speed=_speed(args), interactive=True) as fake:
        print(
            f"Replaying {args.cassette} at {fake.base_url} (speed {fake.speed:g}).", file=sys.stderr
        )
        code = run_to_end(command, {**os.environ, **replay_env(fake.base_url)})
    if not fake.log:
        report = "No request reached the replay."
    else:
        report = fake.unplayed_report() or "Every recorded exchange was played."
        if order_free := fake.order_free_report():
            report += "\n" + order_free
    print(f"For information (not a failure): {report}", file=sys.stderr)
    return code


def run_to_end(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a command to its end and return its exit code, or 0 after a Ctrl-C.

    Ctrl-C in a terminal reaches the whole process group, the command too: it decides when to
    end (Jupyter asks first), so this waits for it rather than leave it running orphaned. A
    SIGTERM is passed on to it, likewise.
    """
    child = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    interrupted = False
    while True:
        try:
            code = child.wait()
        except KeyboardInterrupt:
            interrupted = True
        else:
            if interrupted:
                return 0
            return code if code >= 0 else 128 - code  # killed by a signal: as a shell says


def _record(args: argparse.Namespace) -> int:
    from .recorder import record

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return record(args.out, args.upstream, args.port, command)


def _script(args: argparse.Namespace) -> int:
    from .scenarios import SCENARIOS
    from .script import generate

    if args.scenario == "all":
        out_dir = args.out or SCENARIO_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, scenario in SCENARIOS.items():
            generate(args.script, args.fixtures, scenario).save(out_dir / f"{name}.jsonl")
        print(f"wrote {len(SCENARIOS)} scenario cassettes to {out_dir}")
        return 0
    scenario = SCENARIOS[args.scenario] if args.scenario else None
    out = args.out or (SCENARIO_DIR / f"{args.scenario}.jsonl" if scenario else SHIPPED_CASSETTE)
    generate(args.script, args.fixtures, scenario).save(out)
    print(f"wrote {out}")
    return 0


def _speed(args: argparse.Namespace) -> float:
    return args.speed if args.speed is not None else speed_from_env()


if __name__ == "__main__":
    sys.exit(main())
