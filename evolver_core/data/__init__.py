"""Data: record schemas (`records`), Parquet storage (`storage`), the run layout (`run_layout`) and
what produced each stage (`identity`).
"""
