"""Cross-model distillation: the embedding adapter learns a SAM-family teacher's embedding."""
