"""The trainer: the epoch loop, evaluation, checkpoints and exact resume, the run folder, logging and multi-process
setup; the Task contract and the TASKS registry (the tasks themselves are makd/tasks/)."""
