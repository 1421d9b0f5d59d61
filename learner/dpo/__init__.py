"""DPO (Rafailov et al. 2023) and its relatives IPO (Azar et al. 2023), conservative DPO (label
smoothing) and RPO's NLL term (Pang et al. 2024): preference learning without a reward model."""
