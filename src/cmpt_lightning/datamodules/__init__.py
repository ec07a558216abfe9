"""Lightning data modules: splits, loaders, preprocessing and simulated missingness."""
