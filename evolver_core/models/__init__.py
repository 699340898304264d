"""Models: where model folders live and how they are written (`folders`), the embedded models
(`embedded`: SmolLM2, the tiny test model), model references (`refs`), merged adapters
(`merge`), and what the domain needs from a model server (`serving`: the protocol that
`infra`'s servers satisfy).
"""
