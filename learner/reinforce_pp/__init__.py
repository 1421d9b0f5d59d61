"""REINFORCE++ (Hu 2025): PPO clip without a critic, KL in the reward, batch-normalised advantages."""
