"""Starting and stopping the services the pipeline talks to (model servers, Prefect,
object store). Nothing here holds domain logic; see DESIGN.md "Layers"."""
