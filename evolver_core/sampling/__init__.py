"""Sampling: one episode of an agent in the real browser (`rollout`), many episodes stored as
resumable Parquet trajectories (`sampler`).
"""
