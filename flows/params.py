"""Typed parameters of the ``star`` flow (validated by Prefect through pydantic) and how the lake and dataset are found.

The jobs' settings are not parameters of their own: the flow passes a config file, dotted overrides
and ``resources`` (the ``resources`` section of ``StarConfig``) to the jobs (``flows.tasks.JobSettings``).
"""

from __future__ import annotations

import os
from typing import Literal


# The two things the flow does; the deployment of each mode carries the same name.
Mode = Literal["train", "nightly-detect"]

LAKE_ENV = "STAR_LAKE_URI"  # read at run time on the worker when the flow gets no lake_uri


DEFAULT_LAKE_DIR = "star-lake"  # what `star demo` creates in the directory it runs in


def worker_start_dirs() -> list[str]:
    """Directories the worker that runs this flow was started in, best guess first.

    A process worker runs each flow in a temporary directory, but the flow-run process inherits
    the worker's environment: ``PWD`` is the directory of the shell that started the worker.
    On Linux, the parent process's working directory (the worker itself) is the second guess.
    """
    seen: list[str] = []
    candidates = [os.environ.get("PWD")]
    try:
        candidates.append(os.readlink(f"/proc/{os.getppid()}/cwd"))
    except OSError:
        pass
    candidates.append(os.getcwd())
    for c in candidates:
        if c and os.path.isabs(c) and c not in seen:
            seen.append(c)
    return seen


def resolve_lake_uri(lake_uri: str | None) -> str:
    """The lake of a run: the parameter, else ``STAR_LAKE_URI`` of the process running the flow,
    else ``./star-lake`` of the directory the worker was started in (the quickstart: ``star demo``,
    then the Prefect steps, from one directory).

    Read at run time (never baked into a deployment), so one deployment serves every worker
    that sets its own lake. A relative local path is made absolute against the current
    directory of the flow-run process and reported, since a process worker runs flows in a
    temporary directory unless its pool sets ``working_dir``.

    Raises:
        ValueError: when neither the parameter nor the environment names a lake and no
            ``star-lake`` directory is where the worker started.
    """
    uri = lake_uri or os.environ.get(LAKE_ENV)
    if not uri:
        starts = worker_start_dirs()
        found = [os.path.join(d, DEFAULT_LAKE_DIR) for d in starts if os.path.isdir(os.path.join(d, DEFAULT_LAKE_DIR))]
        if not found:
            raise ValueError(
                f"no lake: pass the lake_uri parameter, set {LAKE_ENV} in the worker's environment, or start the worker in the "
                f"directory holding ./{DEFAULT_LAKE_DIR} (looked in {', '.join(starts)})"
            )
        return found[0]
    if "://" not in uri and not os.path.isabs(uri):
        uri = os.path.abspath(uri)
    return uri


def resolve_dataset(lake_uri: str, dataset: str | None) -> tuple[str, str]:
    """``(dataset, why)``: the parameter, else the lake's only dataset, else its most recent one.

    Raises:
        ValueError: no dataset parameter and the lake holds no dataset.
    """
    if dataset:
        return dataset, "the dataset parameter"
    from star_core.io.lake import Lake
    from star_core.io.datasets import list_datasets

    metas = list_datasets(Lake(lake_uri))
    names = sorted({m["name"] for m in metas})
    if not names:
        raise ValueError(
            f"no dataset parameter and lake {lake_uri} holds no dataset: import labels first (star labels import) or pass dataset"
        )
    if len(names) == 1:
        return names[0], f"the only dataset in {lake_uri}"
    newest = max(metas, key=lambda m: (m.get("created_at") or "", m["name"]))
    return (
        newest["name"],
        f"the most recent of {len(names)} datasets in {lake_uri} ({', '.join(names)}): "
        f"v{newest['version']} created {newest.get('created_at')}",
    )
