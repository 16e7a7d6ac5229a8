"""What the genimage services share, and nothing else."""
