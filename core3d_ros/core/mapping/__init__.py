"""Mapping logic between the sensors and the map, ROS-free: a Frame built from one decoded set of
sensor inputs (``frames``), recent frames kept by stamp (``framebuffer``) and observations from
a perception stage fused late against their own frame (``late_fusion``)."""
