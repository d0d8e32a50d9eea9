"""Local web app of ``ramir serve``: standard-library HTTP server, no framework (:mod:`ramir.web.server`)."""

from __future__ import annotations

from ramir.web.server import RestoreService, create_app, make_server, parse_multipart

__all__ = ["RestoreService", "create_app", "make_server", "parse_multipart"]
