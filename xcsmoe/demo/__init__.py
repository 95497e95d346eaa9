"""``xcsmoe demo``: serve, search, cut, pretrain, embed and evaluate the bundled sample.

:func:`run_demo` runs every area of the package on six real BigEarthNet S1+S2 pairs and
reports random against pretrained weights side by side; see :mod:`xcsmoe.demo.run`.
"""

from xcsmoe.demo.run import DemoResult, run_demo
from xcsmoe.demo.settings import DemoSettings

__all__ = ["DemoResult", "DemoSettings", "run_demo"]
