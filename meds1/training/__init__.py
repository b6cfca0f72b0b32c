"""SFT wiring (TRL SFTTrainer) and batch-size arithmetic."""
