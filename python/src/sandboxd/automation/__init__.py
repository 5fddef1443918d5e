"""The execution backend of the OpenHands automation service
(openhands-automation 1.26.0) through sandboxd (the ``[automation]`` extra).

:class:`SandboxdBackend` is an ``ExecutionBackend``; :func:`execute_in_sandboxd`
replaces the service's ``execute_in_context``: the tarball goes through
sandboxd's bundle upload (bytes) or bundle fetch (URLs) and the entrypoint
starts as a sandboxd run whose id is the automation run's id, with
``setup``, the dispatcher's env, the automation's timeout and a completion
callback to the service's ``/complete``. ``python -m sandboxd.automation``
starts the service with both in place (see ``python/README.md``).
"""

from .backend import SandboxdBackend, SandboxdSettings, execute_in_sandboxd

__all__ = ["SandboxdBackend", "SandboxdSettings", "execute_in_sandboxd"]
