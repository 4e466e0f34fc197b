-- One Postgres for both services: Prefect's database is POSTGRES_DB (prefect); MLflow gets its own.
CREATE DATABASE mlflow;
