"""The Mapper: runs one frame through segmentation, (optional) embedding and fusion.

API contract (used by the ROS node, the CLI and tests):

    mapper = Mapper(cfg)                      # cfg: MapperConfig; builds segmenter by name
    stats = mapper.process(frame)             # raises FrameError(reason) for a bad frame
    snap = mapper.snapshot()                  # MapSnapshot, consistent, thread-safe
    mapper.save(path); mapper.load(path); mapper.clear()

Implementation lands with the fusion core.
"""
