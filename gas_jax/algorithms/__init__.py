"""Pure algorithm builders (init/step functions over frozen states)."""
