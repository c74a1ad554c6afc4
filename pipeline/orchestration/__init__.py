"""Orchestration: the DVC DAG, parameter overrides, the DVC runner, launchers, status and the Prefect flow."""
