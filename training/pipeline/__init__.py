"""The pipeline stages, in flow order: images -> data -> augment -> model/extractor -> features -> head
-> metrics; then calibration, ood/trust (the "neither" score), mislabels and corrections (the loop)."""
