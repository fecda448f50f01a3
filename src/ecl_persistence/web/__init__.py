"""``ecl-db serve``: a read-only web dashboard over an ECL database.

It needs the ``web`` extra (Starlette, uvicorn, Jinja2): ``pip install
'ecl-persistence[web]'``. :func:`create_app` builds the ASGI application;
``ecl-db serve`` runs it with uvicorn. It uses only the public API (read-only
units of work, the repositories, ``workflows.load``) and never writes.
"""

from __future__ import annotations

from ecl_persistence.web.app import create_app

__all__ = ["create_app"]
