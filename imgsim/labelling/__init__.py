"""The labelling assistant: propagation, suggestions and review over the kNN graph; label exports."""
