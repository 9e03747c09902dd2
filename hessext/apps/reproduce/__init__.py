"""``hessext reproduce NAME``: the research programmes hessext comes from, rerun end to end.

Each pipeline is a module here that defines

    NAME: str                          the command's name (``hessext reproduce NAME``)
    HELP: str                          one line for ``hessext reproduce --help``
    add_arguments(parser) -> None      its own options (beyond the common ones below)
    run(args) -> pathlib.Path          the work, writing DIR/report (report.md, report.html,
                                       results.json, figures); returns the report folder

and is listed in PIPELINES. The common options, parsed by hessext/cli.py for every pipeline:
``--quick`` (the reduced protocol, minutes on 2 cores), ``--out DIR`` (a resumable work folder,
hessext/reporting/workdir.py; default ./hessext-NAME), ``--seed S``, ``--threads T``,
``--no-progress``. A pipeline's results come from a typed results object
(hessext/reporting/results.py), the same one its report is written from.
"""

from __future__ import annotations

from types import ModuleType

from hessext.apps.reproduce import boundary, smoothhess, ssh, toolbox, wetzel

PIPELINES: dict[str, ModuleType] = {
    module.NAME: module for module in (boundary, smoothhess, ssh, toolbox, wetzel)
}
