"""Prefect flows of `star` (thin): one flow named ``star`` whose deployments are ``star/train`` and
``star/nightly-detect`` (see ``prefect.yaml`` and docs/prefect.md).

Importing this package imports Prefect and pydantic only: job modules (torch, Ray, MLflow) are
imported inside the tasks that call them, so a worker that loads the flow stays light.
"""
