"""Runs that write a model folder: training, indexing, the background job, Ray encoding, evaluation."""
