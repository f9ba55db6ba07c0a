"""Measuring the model without ROS: synthetic scenes with ground truth, the held-out protocol, variants,
speed benchmarks and the pictures they draw."""
