"""Image indexes and dataset layouts, target controls, transforms and views, datasets, caches and loaders."""
