"""The methods of the study by their config name (``RunConfig.method``): the one place a name becomes a model.

Adding a method: a folder under ``avaga_lib/models/`` with a :class:`~avaga_lib.models.interface.Method` subclass,
and one entry here (and its name in ``config.METHODS``).
"""

from __future__ import annotations

from avaga_lib.config import RunConfig
from avaga_lib.models.autoencoder.method import AutoencoderMethod
from avaga_lib.models.avaga.method import AVAGAMethod
from avaga_lib.models.interface import Method

METHODS: dict[str, Method] = {m.name: m for m in (AVAGAMethod(), AutoencoderMethod("l2"), AutoencoderMethod("ssim"))}


def method_of(name: str) -> Method:
    """The method named ``name`` (a config's ``method``).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method '{name}' unknown; choose one of {sorted(METHODS)} (config key `method`)") from None


def check_config(cfg: RunConfig) -> None:
    """Refuse a config its method cannot run (:meth:`Method.check`), before any work.

    Raises:
        ValueError: every problem, in one message.
    """
    problems = method_of(cfg.method).check(cfg)
    if problems:
        raise ValueError(f"config '{cfg.name}': " + "; ".join(problems))
