"""dpgviz.ipc: the process boundary between the GUI and the inference worker.

messages (command and event dataclasses), ring (the shared-memory slots a run's records
travel through), worker (the spawned process that owns torch), client (the GUI side),
runner (one blocking run, for the CLI). Only worker imports torch, inside its process.
"""

LISTEN_PORT = 5560  # where a window listens for recorded runs (ipc.listen), next to the remote worker's 5557
