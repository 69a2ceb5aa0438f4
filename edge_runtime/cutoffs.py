"""Thecal-sac area cut-offs for central stenosis (mm2): the one place the defaults live.

Literature: dural-sac cross-sectional area < 100 mm2 relative and < 75 mm2 absolute stenosis
(Schönström et al., Spine 1985; Hamanishi et al., Spine 1994). No imports, so the CLI's
`--help` can show them without loading the measurement code.
"""

RELATIVE_STENOSIS_MM2 = 100.0
ABSOLUTE_STENOSIS_MM2 = 75.0
