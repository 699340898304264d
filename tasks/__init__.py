"""Prefect tasks: thin wrappers around `evolver_core` stages (cache policy, retries,
result storage, artifacts). Each task's plain body is `<task>.fn`, callable without Prefect.
"""
