"""GRPO (Shao et al. 2024) and Dr.GRPO (Liu et al. 2025): group-relative advantages, no critic."""
