"""Pipeline stages: each a function from (model, config, data) to (model, report)."""
