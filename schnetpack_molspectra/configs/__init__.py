"""The hydra configs of schnetpack-molspectra (put on ``spktrain``'s search path by
``hydra_plugins/molspectra_searchpath``), and what they use besides SchNetPack's classes:

- :func:`modules` (``_target_``): a list of modules given by name, which inheriting configs
  and switches can leave out;
- the ``qm9`` resolver, ``finetune.qm9_attribute``: ``${qm9:<property>,<attribute>}`` is an
  attribute of the QM9 target ``<property>`` (``data.qm9_targets.QM9_TARGETS``: key, aggregation,
  atomrefs, is_extensive, module, ...); ``${qm9:<property>,<attribute>,<value>}`` whether it equals ``<value>``.

- the ``run_uuid`` resolver: ``${run_uuid:}`` is a uuid1 made once per config (SchNetPack's
  ``${uuid:1}`` makes a new one at each look-up). The experiments name their run directory with it:
  Lightning's DDP launcher looks the run directory up again to start ranks 1..N-1 in it, which with
  ``${uuid:1}`` sends them to a directory of their own (their own split file, checkpoints and
  ``best_model``).

Hydra imports this package to read the configs, which registers the resolvers.
"""

import uuid
from typing import Any, List, Mapping

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from schnetpack_molspectra.finetune import qm9_attribute

__all__ = ["modules", "pretraining_transforms"]


def modules(**entries: Any) -> List[Any]:
    """The named entries of a config, built in order as a list, without those switched off.

    An entry is a config with a ``_target_``, ``null`` (left out: a config that inherits the
    list drops an entry this way), or ``{when: <bool>, module: <config>}`` (built only when
    ``when`` is true). Use with ``_recursive_: false``, so that modules left out are never built.
    The names make each entry one override away: ``model.output_modules.spectra.specformer.d_model=64``.
    """
    built = []
    for name, entry in entries.items():
        if entry is None:
            continue
        if isinstance(entry, Mapping) and "when" in entry:
            if set(entry) != {"when", "module"}:
                raise ValueError(
                    f"entry {name!r}: a switched entry has the keys 'when' and 'module', got {sorted(entry)}"
                )
            if not entry["when"]:
                continue
            entry = entry["module"]
        built.append(instantiate(entry))
    return built


def pretraining_transforms(*overrides: str) -> List[Any]:
    """The pre-training preprocessing, built from ``data=molspectra`` as ``spktrain
    experiment=molspectra_pretrain`` builds it (validation, ``log10`` normalisation, patch masks,
    centre of mass, coordinate noise, neighbour list, float32), for scripts and notebooks.

    Args:
        overrides: hydra overrides of that experiment, e.g. ``"globals.sigma=0.1"``, ``"globals.cutoff=4.0"``,
            ``"data.transforms.neighbors._target_=schnetpack.transform.ASENeighborList"``.
    """
    overrides = ["experiment=molspectra_pretrain", *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a hydra app or compose context: its search path
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_module(config_module="schnetpack.configs", version_base=None):
            cfg = compose("train", overrides=overrides)
    return instantiate(cfg.data.transforms)


if not OmegaConf.has_resolver("qm9"):
    OmegaConf.register_new_resolver("qm9", qm9_attribute)

if not OmegaConf.has_resolver("run_uuid"):
    OmegaConf.register_new_resolver("run_uuid", lambda: str(uuid.uuid1()), use_cache=True)

if not OmegaConf.has_resolver("contains"):
    # ${contains:${globals.modalities},ir}: whether a list holds an item (a switch of configs.modules)
    OmegaConf.register_new_resolver("contains", lambda items, item: item in list(items))
