"""Bootstrap phases: one module per phase, each with `plan()` and `apply()` (see `base`)."""
