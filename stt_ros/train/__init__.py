"""Training: the reference SAM on synthetic scenes."""
