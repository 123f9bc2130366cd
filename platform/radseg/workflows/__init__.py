"""The platform's use cases, shared by the CLI, the web app and the job handlers.

Each function takes the platform (and a ``session`` where it only touches the database) and
never commits: the caller — a command, a request or a job step — frames the transaction.
"""
