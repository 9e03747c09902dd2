"""The end-to-end studies behind ``hessext demo``, ``hessext demo boundary`` and
``hessext analyze``; each writes a report folder (PNG figures, report.md, report.html)."""

from hessext.demo._toolbox import auroc

__all__ = ["auroc", "run_ssh_demo", "run_boundary_demo", "run_analyze"]


def run_ssh_demo(*args, **kwargs):
    from hessext.demo.ssh import run_ssh_demo as run

    return run(*args, **kwargs)


def run_boundary_demo(*args, **kwargs):
    from hessext.demo.boundary_study import run_boundary_demo as run

    return run(*args, **kwargs)


def run_analyze(*args, **kwargs):
    from hessext.demo.analyze import run_analyze as run

    return run(*args, **kwargs)
