"""What a driver passes on to its Ray workers' environment: endpoints and region, never credentials.

Ray writes a task's or actor's runtime-env ``env_vars`` in clear text to ``runtime_env_agent.log``
(and keeps them in the GCS), under a session directory other users of the machine can read. So
the driver forwards only where the services are (:data:`FORWARDED_ENV`); workers get credentials
the way a cluster gives them: from their own environment (a Kubernetes Secret mounted with
``envFrom``: infra/k8s/secret.example.yaml), an instance or IRSA role, or, for the embedded local
Ray that the driver starts in-process, by inheriting the driver's environment (the raylet and
its workers are the driver's child processes). Policy: docs/operations.md, "Credentials".
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Endpoints, region and harmless switches: the only variables a driver forwards to Ray workers.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
    "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)
# Parts of a variable name that mark a credential; nothing named so is ever forwarded.
CREDENTIAL_MARKERS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "KEY_ID", "CREDENTIAL", "AUTH")


def is_credential(name: str) -> bool:
    """True when the variable name looks like a credential (``AWS_SECRET_ACCESS_KEY``, ``*_TOKEN``, ...)."""
    upper = name.upper()
    return any(marker in upper for marker in CREDENTIAL_MARKERS)


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set, non-empty :data:`FORWARDED_ENV` variables of ``environ`` (default: this process)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in FORWARDED_ENV if environ.get(k) and not is_credential(k)}
