"""Data: an image folder checked into a dataset, the splits trained on, augmentation, corrections."""
