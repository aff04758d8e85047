"""Pure rules of the job model: no I/O."""
