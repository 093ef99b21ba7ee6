"""The model: the Keras backend, the autoencoder and its training, KMeans groups, the 2-D map."""
