"""SFT wiring (TRL SFTTrainer: `sft`), the process group from torchrun or SLURM (`distributed`), and
checkpointing on preemption or Ctrl-C (`preemption`)."""
