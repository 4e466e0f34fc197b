"""Prefect tasks: thin wrappers over tuneline's plain functions, one module per stage."""

from tuneline.settings import configure_environment

# Before any `import prefect`: Prefect reads its settings (home, logging) once.
configure_environment()
