"""The model folder on disk: versions, per-image records, a person's labels, group names, vector engines."""
