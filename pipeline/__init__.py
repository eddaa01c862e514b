"""Training stages, one module each: data, teacher, distill (+ soft targets), evaluate, prune
(+ importance), quantize, and the budget search.

The stage contract (edgepipe/stages.py): an entry function `run(ctx, **inputs) -> (report, files)`
whose keyword inputs are everything it reads - config sections or single settings by value,
upstream results by their content key - so its cache key is derived, never built by hand. The
orchestrator (edgepipe/app/run.py) only orders the stages."""
