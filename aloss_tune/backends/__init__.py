"""Search backends: Optuna and KerasTuner, both driven by one `SearchSpace`."""
