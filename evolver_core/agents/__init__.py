"""Agents: the protocol and the scripted solver (`base`), the LLM policy (`policy`), world-model
look-ahead (`lookahead`), and the reply format they all speak (`reply`).
"""
