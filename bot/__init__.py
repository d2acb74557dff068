"""The chat face of Attune: command line, (later) Slack app, terminal chat, callback listener."""
