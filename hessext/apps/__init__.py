"""The applications on top of everything (layer 5): ``hessext demo`` (demo_ssh, demo_boundary),
``hessext analyze`` (the toolbox on the user's own model and data), ``hessext reproduce NAME``
(the paper pipelines); each writes a report folder (PNG figures, report.md, report.html,
results.json). ``analysis`` holds the analysis the demo and analyze share."""
