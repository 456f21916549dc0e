"""Pieces of ``gasp train``: setup (model, LoRA, optimizer), the objective, the data feed, the loop,
metrics, checkpoint folders and the saved training state."""
