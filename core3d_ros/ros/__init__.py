"""ROS 2 adapters of core3d (rclpy): message conversion, topic sync, the mapping and perception nodes.

- ``conversions``: messages <-> numpy / core types, one module per message family (images,
  compressed, camera_info, poses, clouds, markers, objects, query; no cv_bridge).
- ``sync``: approximate-time synchroniser with per-reason accounting (no message_filters);
  TF pose look-up when tf2_ros is installed.
- ``node``: ``MappingNode`` and the ``main`` entry point (``python -m core3d_ros.ros.node``),
  composed of ``services``, ``publishing``, ``late_fusion`` and ``core.worker`` (``protocols``:
  what they need of the mapper and the query engine).

Submodules are imported on use, so ``import core3d_ros.ros`` needs no ROS installation.
"""
