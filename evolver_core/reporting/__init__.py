"""Reporting: success with intervals (`metrics`, `results`), runs side by side (`compare`), charts
(`plots`) and the HTML viewer (`viewer`).
"""
