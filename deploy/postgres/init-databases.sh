#!/bin/sh
# Run once by the postgres image, on an empty data volume (/docker-entrypoint-initdb.d/): one
# role and one database each for the Prefect server, MLflow's backend store and the label store
# (one each, because Prefect and MLflow both keep an alembic_version table). The names are
# those of `meterid serve --postgres` (<db>_prefect, <db>_mlflow, <db>_review). Passwords come from the environment
# (deploy/.env); psql quotes them (:'name'), so they never pass through the shell.
# Changing a password later: ALTER ROLE ... PASSWORD ..., then the same value in deploy/.env.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v prefect_password="$PREFECT_DB_PASSWORD" -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v review_password="$REVIEW_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE meterid_prefect OWNER prefect;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE meterid_mlflow OWNER mlflow;
CREATE ROLE review LOGIN PASSWORD :'review_password';
CREATE DATABASE meterid_review OWNER review;
-- Prefect 3's migrations need pg_trgm (a trusted extension: created here once, as superuser).
\connect meterid_prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
