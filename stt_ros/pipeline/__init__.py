"""The node's ROS-free logic: stamp binding, tracks, work scheduling, message conversions, projection.

Everything here runs and is tested without ROS; `stt_ros.ros.node` only wires it to rclpy.
"""
