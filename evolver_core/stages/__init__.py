"""The stage layer: one plain function per stage of a round (serve the models it needs, read
its inputs, call the domain, write its outputs), callable from the CLI, a notebook or a
Prefect task alike. Each stage also says what produced its results (`<stage>_identity`,
a `StageIdentity`): the Prefect tasks (`tasks/`) put it in their cache keys, and the stage
writes it beside its data (`run_layout.open_stage`), so results of another identity are
never resumed, mixed or reported as these.

A stage that uses models is handed its server factory (`serve`, an
`evolver_core.models.serving.ServeModel`): the tasks, flows and CLI pass `infra.serving.serve`,
so the domain never imports `infra/`.
"""
