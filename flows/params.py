"""Typed parameters of the ``star`` flow (validated by Prefect through pydantic)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The two things the flow does; the deployment of each mode carries the same name.
Mode = Literal["train", "nightly-detect"]

LAKE_ENV = "STAR_LAKE_URI"  # read at run time on the worker when the flow gets no lake_uri


class Resources(BaseModel):
    """Compute for the jobs a flow run starts (passed through to the job configs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(1, ge=1, description="Ray Train workers; CPU decode tasks in flight for extraction")
    gpu: bool = Field(False, description="one GPU per Train worker / per model actor")
    actors: int = Field(1, ge=1, description="model-holding actors for extraction (I3D) and detection (STAR)")
    ray_address: str | None = Field(None, description="Ray cluster to attach to; None: the worker's RAY_ADDRESS, else a local Ray")
    timeout_s: int = Field(6 * 3600, ge=60, description="upper bound on each job step (task timeout)")


def resolve_lake_uri(lake_uri: str | None) -> str:
    """The lake of a run: the parameter, else ``STAR_LAKE_URI`` of the process running the flow.

    Read at run time (never baked into a deployment), so one deployment serves every worker
    that sets its own lake. A relative local path is made absolute against the current
    directory of the flow-run process and reported, since a process worker runs flows in a
    temporary directory unless its pool sets ``working_dir``.

    Raises:
        ValueError: when neither the parameter nor the environment names a lake.
    """
    uri = lake_uri or os.environ.get(LAKE_ENV)
    if not uri:
        raise ValueError(f"no lake: pass the lake_uri parameter or set {LAKE_ENV} in the worker's environment")
    if "://" not in uri and not os.path.isabs(uri):
        uri = os.path.abspath(uri)
    return uri
