"""Training one run: the trainer read top to bottom, its checkpoints, data parallelism, run_one."""
