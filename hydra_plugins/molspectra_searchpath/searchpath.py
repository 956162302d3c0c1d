"""Hydra plugin: puts schnetpack-molspectra's configs on the search paths of SchNetPack's CLIs.

Hydra imports every module in the ``hydra_plugins`` namespace package, so once the package is
installed ``spktrain experiment=molspectra_pretrain`` works from any directory, and ``spkmd`` finds
the configs its wheels leave out (``schnetpack_molspectra.md_configs``).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: the primary config directory of ``spkmd`` (``schnetpack/md/cli.py``: ``config_path="md_configs"``; hydra
#: gives it to search path plugins as ``pkg://schnetpack.md/md_configs``)
SPKMD_CONFIGS = "schnetpack.md.md_configs"


class MolSpectraSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if any(SPKMD_CONFIGS in str(element.path).replace("/", ".") for element in search_path.get_path()):
            search_path.append(provider="schnetpack-molspectra", path="pkg://schnetpack_molspectra.md_configs")
        else:
            search_path.append(provider="schnetpack-molspectra", path="pkg://schnetpack_molspectra.configs")
