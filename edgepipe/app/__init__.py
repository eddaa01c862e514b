"""What users run: the `compress-and-export` orchestrator, the CLI, the report and the terminal summary."""
