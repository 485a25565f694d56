"""Cards and pushes: the dataset card, the model card, and the gate that compares a candidate with main."""
