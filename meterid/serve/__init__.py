"""``meterid serve``: the production stack on one machine (Prefect server and worker, MLflow
server, optionally on PostgreSQL). ``plan`` describes it as data, ``stack`` runs it."""
