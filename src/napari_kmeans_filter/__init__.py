"""K-means colour quantisation for napari, scripts and the command line."""
