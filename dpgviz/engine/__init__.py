"""torch side: checkpoints, the model, the sampler and training. Imported only in the worker
process (and the CLI's training/evaluation commands), never by gui/ or store/."""
