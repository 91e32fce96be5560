"""Persistence: checkpoints (``checkpoint``) and the one-process-per-run-directory lock (``run_lock``); the
fsync/atomic-write helpers both use live in :mod:`torchrl_dreamerv3.durable`."""
