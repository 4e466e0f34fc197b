"""Prefect flows: wiring and parameters only; the ML lives in `tuneline`."""

from tuneline.settings import configure_environment

# Before any `import prefect`: Prefect reads its settings (home, logging) once.
configure_environment()
