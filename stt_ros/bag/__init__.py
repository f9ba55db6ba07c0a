"""Offline rosbag tools: read bags robustly, evaluate a predictor on them, write results and reports."""
