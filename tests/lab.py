"""JupyterLab on the notebook, saving it publishable: `python -m tests.lab [jupyter lab args]`.

`make lab` runs `python -m tests.lab $(LAB_ARGS) iterate_failing_tests.ipynb`. Without
ANTHROPIC_API_KEY the notebook talks to the replay fake (the shipped cassette or
REPLAY_CASSETTE, at REPLAY_SPEED, default 1 = the recorded pace; Restart Kernel and Run All
replays it from the top); with a key it talks to the live API. Either way every notebook the
lab saves is written as it is committed, through Jupyter's own
`FileContentsManager.pre_save_hook`, so working in the lab keeps the repository publishable.
The lab's root is the current directory; every argument goes to `jupyter lab` as given
(e.g. `--no-browser --port=8899 --allow-root`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
# Imported by the Jupyter server: `python -m jupyterlab` puts the current directory on sys.path.
HOOK = "--FileContentsManager.pre_save_hook=tests.lab.pre_save_hook"


def publishable(nb: Any) -> Any:
    """The notebook as it is committed, changed in place and returned: no widget views (their
    state is not stored), no widget state, no timing metadata, the standard kernelspec (Jupyter
    writes the running kernel's, e.g. "Python 3 (ipykernel)"). Nothing else changes.

    Takes an nbformat NotebookNode or the plain JSON dict of a contents model.
    """
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    metadata = nb.setdefault("metadata", {})
    metadata.pop("widgets", None)
    metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def pre_save_hook(model: dict[str, Any], **_context: Any) -> None:
    """Jupyter calls this as `hook(model=..., path=..., contents_manager=...)` before it writes."""
    if model.get("type") == "notebook":
        publishable(model["content"])


def main(argv: list[str] | None = None) -> int:
    # Imported here: the Jupyter server imports this module for the hook alone.
    from tests.replay.__main__ import main as replay
    from tests.replay.__main__ import run_to_end

    lab = [sys.executable, "-m", "jupyterlab", HOOK, *(sys.argv[1:] if argv is None else argv)]
    if os.environ.get("ANTHROPIC_API_KEY"):
        return run_to_end(lab)
    return replay(["run", "--speed", os.environ.get("REPLAY_SPEED") or "1", "--", *lab])


if __name__ == "__main__":
    sys.exit(main())
