"""The rclpy shell around the ROS-free node logic; only `node` imports rclpy."""
