"""Reading and writing images. Knows nothing of training: everything here returns `Image` objects."""
