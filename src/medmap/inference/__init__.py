"""Applying trained networks to whole images: sliding window, post-processing, case predictors."""
