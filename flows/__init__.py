"""Prefect flows: each reads like the diagram it implements (DESIGN.md "The loop")."""
