"""Head: the linear head on cached features, its out-of-fold twins, the converged rival, the suspects."""
