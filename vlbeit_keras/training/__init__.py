"""Training runs behind the recipes (pretraining, fine-tuning)."""
