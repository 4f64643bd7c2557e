"""Work around the library, beside it: benchmarks, offline runs (map a dataset, write pictures),
evaluation against ground truth and the ablation. core3d_ros.core never imports from here."""
