"""Backbone features: the frozen timm model, the runtime measured fastest, the on-disk bank, stage tuning."""
