"""The 2D toy suite: MLP denoisers on 2D point clouds, scored by a kNN KL estimate."""
