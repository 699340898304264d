"""WebEvolver domain layer: browser environment, task suites, records, agents.

Never imports Prefect: everything here runs from a notebook or a plain script.
"""
