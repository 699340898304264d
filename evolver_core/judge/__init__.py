"""The judge r̂: its prompt and verdict (`judge`), the one verdict parser (`verdicts`), and judging
stored trajectories (`stored`).
"""
