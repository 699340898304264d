"""The contracts every concept of the loop shares, at the bottom of the domain: the task and
suite protocol (`task`), the observation and its text format (`observation`), the action
grammar (`actions`), the reply format (`reply`), the agent protocol (`agent`), played
episodes (`episode`), the policy prompt (`prompt`), shared text helpers (`text`) and the
base of the errors a person sees (`errors`).

Nothing here imports another folder of `evolver_core` (only the prompt templates of
`prompts/`); every other folder may import it.
"""
