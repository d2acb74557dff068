"""The execution engine: packs, executions, storage, broker, worker and REST API. No Slack here."""
