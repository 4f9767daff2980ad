"""Using a trained model: loading any checkpoint or export, evaluation, compressor baselines."""
