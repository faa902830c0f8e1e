"""The ``/individual-training`` page on the scheduler's own dashboard (Bokeh, live).

Importing this module adds the page to ``distributed.dashboard.scheduler.applications``, the
dict the scheduler reads when it starts, so:

- in-process: ``import analytics.dashboard`` before creating the ``LocalCluster``, then
  ``analytics.monitor.install(client)``;
- ``dask scheduler --preload analytics.dashboard`` (``dask_setup`` also starts the monitor, so
  runs are recorded before anyone opens the page);
- a cluster that already runs: ``analytics.monitor.install(client)`` registers
  :class:`TrainingPage`, which serves the page from a second Bokeh application added to the
  scheduler's HTTP server at run time.

The page lists under "More..." as "Training". ``applications`` is internal to distributed
(hence the ``<2027`` pin and ``tests/analytics/test_monitor.py``).

This module registers and serves the page; what a session shows is
:class:`analytics.training_view.TrainingDashboard` (re-exported here).
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.dashboard.components import add_periodic_callback
from distributed.dashboard.components.scheduler import BOKEH_THEME, env
from distributed.dashboard.scheduler import applications
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import log_errors

from .monitor import attach
from .training_view import TrainingDashboard

__all__ = ["PAGE", "TrainingDashboard", "TrainingPage", "add_page", "dask_setup", "training_doc"]

logger = logging.getLogger(__name__)

PAGE = "/individual-training"
UPDATE_MS = 500


@log_errors
def training_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document function ``(scheduler, extra, doc)`` of the page."""
    view = TrainingDashboard(attach(scheduler))
    view.update()
    add_periodic_callback(doc, view, UPDATE_MS)
    doc.title = "Dask: Training"
    doc.add_root(view.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


applications[PAGE] = training_doc


def dask_setup(scheduler: Any) -> None:
    """``--preload`` hook: start recording runs as soon as the scheduler starts."""
    attach(scheduler)


def add_page(scheduler: Any) -> Any:
    """Serve the page on a running scheduler's dashboard, if it is not served already.

    Returns the Bokeh application added to ``scheduler.http_application`` (stop it to remove
    the page), or ``None`` when the page is already there or the dashboard is off.
    Must run on the scheduler's event loop (a plugin's ``start``, ``run_on_scheduler``).
    """
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables
    from tornado.ioloop import IOLoop

    http_app = getattr(scheduler, "http_application", None)
    bokeh_apps = [a for a in getattr(http_app, "applications", ()) if hasattr(a, "app_paths")]
    if not bokeh_apps:
        logger.warning("the scheduler has no Bokeh dashboard; %s is not served", PAGE)
        return None
    if any(PAGE in app.app_paths for app in bokeh_apps):
        return None
    # template_variables is memoized per scheduler: the dict, and its "plots" list, are the ones
    # every page of this dashboard renders its navbar from, so the link shows up in "More...".
    variables = template_variables(scheduler)
    link = {"url": PAGE.strip("/"), "name": "Training"}
    if link not in variables["plots"]:
        variables["plots"].append(link)
        variables["plots"].sort(key=lambda d: d["name"])
    app = BokehApplication(
        {PAGE: training_doc}, scheduler, prefix=bokeh_apps[0].prefix,
        template_variables=variables,
    )
    http_app.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    return app


class TrainingPage(SchedulerPlugin):
    """Scheduler plugin serving :data:`PAGE` on a scheduler started without this module.

    Idempotent; does nothing when the page is already served (preload or in-process import).
    """

    name = "pipeline-training-page"
    idempotent = True

    def __init__(self) -> None:
        self._app: Any = None
        self._scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        attach(scheduler)
        self._app = add_page(scheduler)

    async def close(self) -> None:
        if self._app is None:
            return
        self._app.stop()
        apps = self._scheduler.http_application.applications
        if self._app in apps:
            apps.remove(self._app)
        self._app = None
