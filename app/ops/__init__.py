"""What keeps a worker operable: metrics, logs, the request log, dependency checks, probes,
shutdown, request deadlines, garbage-collector tuning."""
