"""RLOO (Ahmadian et al. 2024): REINFORCE with the leave-one-out group baseline, no critic."""
