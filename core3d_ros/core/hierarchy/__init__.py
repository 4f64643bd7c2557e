"""The map's hierarchy (KeySG-style): floors -> rooms -> objects, kept current while mapping.

graph.py holds the data model shared by the builder, the ROS surface, map files and queries."""
