"""Conversions between ROS 2 messages and core3d types, one module per message family, without
cv_bridge. Everything is numpy-vectorised: no per-pixel or per-point Python loops.

- ``headers``: std_msgs/Header, builtin_interfaces/Time
- ``images``: sensor_msgs/Image
- ``compressed``: sensor_msgs/CompressedImage (compressed, compressedDepth)
- ``camera_info``: sensor_msgs/CameraInfo
- ``poses``: geometry_msgs poses and transforms, nav_msgs/Odometry
- ``colors``: std_msgs/ColorRGBA, instance colours
- ``clouds``: sensor_msgs/PointCloud2
- ``markers``: visualization_msgs/MarkerArray
- ``objects``: core3d/Object, core3d/ObjectArray
- ``map_stream``: core3d/ObjectState, core3d/MapUpdate (the map stream) <-> the mirror's MapVersion
- ``query``: core3d/srv/Query responses
- ``scene_graph``: core3d/SceneGraph, Floor, Room <-> core.hierarchy; room markers
- ``errors``: the errors

Code in ``ros/`` imports the module it needs; this package re-exports every public name for
callers elsewhere (``conversions.NAME``).
"""
from __future__ import annotations

from .camera_info import camera_info_distortion, camera_info_to_intrinsics, intrinsics_to_camera_info
from .clouds import (
    CLOUD_DTYPE, cloud_records, cloud_to_arrays, object_cloud, points_to_cloud, records_to_cloud, snapshot_to_cloud,
)
from .colors import color_rgba, instance_color
from .compressed import compressed_depth_to_raw, compressed_to_rgb, depth_to_compressed, rgb_to_compressed
from .errors import CameraInfoError, ConversionError, ImageError, PoseError
from .headers import make_header, to_seconds, to_time
from .images import (
    COLOR_ENCODINGS, DEPTH_ENCODINGS, IMAGE_ENCODINGS, INSTANCE_ENCODINGS, array_to_image, depth_to_image,
    image_to_array, image_to_depth_raw, image_to_instances, image_to_rgb, instances_to_image, rgb_to_image,
)
from .markers import (
    box_corners, delete_all_marker, delete_object_markers, object_markers, query_markers, snapshot_to_markers,
)
from .map_stream import map_update_msg, msg_to_map_version, msg_to_streamed_object, object_state_to_msg
from .objects import object_to_msg, snapshot_to_object_array
from .poses import (
    box_pose, matrix_to_pose, matrix_to_transform, pose_message_to_matrix, pose_to_matrix, transform_to_matrix,
)
from .query import fill_query_stages
from .scene_graph import msg_to_scene_graph, room_markers, room_of_objects, scene_graph_to_msg

__all__ = [
    "camera_info_distortion", "camera_info_to_intrinsics", "intrinsics_to_camera_info",
    "CLOUD_DTYPE", "cloud_records", "cloud_to_arrays", "object_cloud", "points_to_cloud", "records_to_cloud",
    "snapshot_to_cloud",
    "color_rgba", "instance_color",
    "compressed_depth_to_raw", "compressed_to_rgb", "depth_to_compressed", "rgb_to_compressed",
    "CameraInfoError", "ConversionError", "ImageError", "PoseError",
    "make_header", "to_seconds", "to_time",
    "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "IMAGE_ENCODINGS", "INSTANCE_ENCODINGS", "array_to_image",
    "depth_to_image", "image_to_array", "image_to_depth_raw", "image_to_instances", "image_to_rgb",
    "instances_to_image", "rgb_to_image",
    "box_corners", "delete_all_marker", "delete_object_markers", "object_markers", "query_markers",
    "snapshot_to_markers",
    "map_update_msg", "msg_to_map_version", "msg_to_streamed_object", "object_state_to_msg",
    "object_to_msg", "snapshot_to_object_array",
    "box_pose", "matrix_to_pose", "matrix_to_transform", "pose_message_to_matrix", "pose_to_matrix",
    "transform_to_matrix",
    "fill_query_stages",
    "msg_to_scene_graph", "room_markers", "room_of_objects", "scene_graph_to_msg",
]
