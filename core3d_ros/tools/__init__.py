"""Work around the library, beside it: what starts the nodes or runs the library from outside.
The benches (``bench/``, one module each), the demo (``demo``), the dataset player (``player``),
offline runs (map a dataset, write pictures), evaluation against ground truth and the ablation.
Imports point one way, tools -> ros -> core: core3d_ros.core and core3d_ros.ros never import
from here."""
