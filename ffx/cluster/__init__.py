"""Running ffx on clusters: batch scripts for a scheduler (Slurm) that build and train."""
