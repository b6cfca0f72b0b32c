"""Reinforcement learning with verifiable rewards (stage=rl): rewards, questions, GRPO wiring."""
