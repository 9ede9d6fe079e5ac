"""papermill's command line with the notebook's Jupyter kernel reached over an encrypted transport.

``python -m avaga_lib.orchestration.notebook_exec <papermill arguments>`` is what
:func:`avaga_lib.orchestration.job.papermill_command` starts for every run and analysis notebook; it takes papermill's
own arguments and behaves as ``python -m papermill`` (same options, output, exit status). Users never call it: ``python
-m avaga_lib.cli`` stays the study's entry point.

Why: papermill reaches its kernel over TCP on localhost, and ipykernel warns at every kernel start that the
traffic is not encrypted ("Kernel is running over TCP without encryption ..."), into every run log. The remedy it
names, CurveZMQ keys provisioned by the kernel manager, is jupyter_client's documented setting
``KernelManager.transport_encryption`` (Jupyter's transport-encryption proposal). papermill's command line cannot
set a kernel-manager option, so this module registers an engine (:class:`EncryptedTransportEngine`) that passes it
to nbclient, and runs papermill's command line with it. ``auto`` encrypts only kernels whose kernelspec declares
CurveZMQ support (ipykernel's do); other kernels, and a jupyter_client or pyzmq without CurveZMQ, start as before.
Nothing is filtered: every other line of the kernel and of papermill still reaches the log.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import zmq
from jupyter_client.manager import KernelManager
from papermill.cli import papermill
from papermill.engines import NBClientEngine, papermill_engines
from traitlets.config import Config

ENGINE = "avaga-encrypted"  # the papermill engine name this module registers


def transport_config() -> Config:
    """The kernel manager's settings for a run's kernel: CurveZMQ keys where the installed jupyter_client and pyzmq
    support them (``KernelManager.transport_encryption = "auto"``), else none (an unknown setting would only add a
    warning of its own)."""
    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


class EncryptedTransportEngine(NBClientEngine):
    """papermill's default engine (nbclient) with :func:`transport_config` for the kernel manager it starts."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        """Execute as :class:`papermill.engines.NBClientEngine` does; the nbclient client gets the config."""
        return super().execute_managed_notebook(nb_man, kernel_name, config=transport_config(), **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """Run papermill's command line on ``argv`` (default: this process's arguments) with the encrypted engine.

    Exits as papermill does (0 when the notebook ran, non-zero with the traceback when a cell failed).
    """
    papermill_engines.register(ENGINE, EncryptedTransportEngine)
    args = list(sys.argv[1:] if argv is None else argv)
    papermill.main(args=[*args, "--engine", ENGINE], prog_name="papermill")


if __name__ == "__main__":
    main()
