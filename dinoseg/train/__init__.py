"""Episodic meta-training on cached frozen features (and, in :mod:`dinoseg.distill`,
distillation of the embedding adapter from a SAM teacher)."""
