"""Private pieces of ``gasp train``: the objective, the data stream and checkpoints."""
