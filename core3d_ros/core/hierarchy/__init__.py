"""The map's hierarchy (KeySG-style): floors -> rooms -> objects, kept current while mapping.

graph.py holds the data model shared by the builder, the ROS surface, map files and queries;
up.py says which way is up (parameter, dataset, estimate); builder.py (HierarchyBuilder) keeps
floors and rooms current from the TSDF surface and the camera path, with rooms.py segmenting one
floor's grid; keyframes.py (RoomKeyframes) keeps per room the views that cover it."""
