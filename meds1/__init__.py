"""meds1: s1-style medical reasoning distillation (curate, fine-tune, evaluate) from one command line."""
