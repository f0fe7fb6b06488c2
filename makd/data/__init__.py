"""Image indexes, aspect-target join, transforms and the synthetic demo dataset."""
