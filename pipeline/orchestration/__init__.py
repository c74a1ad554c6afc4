"""Orchestration: the DVC DAG (dag), the DVC runner (runner), the Prefect flow (flow, the only
module that imports Prefect), launchers (launch) and the status view (status). Parameter
overrides live in pipeline/config/params.py."""
