"""Reward functions and reward models in TRL's `reward_funcs` form (plain callables). Imports nothing of ours."""
