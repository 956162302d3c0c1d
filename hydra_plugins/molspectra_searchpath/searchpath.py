"""Hydra plugin: puts schnetpack-molspectra's configs on the search path of ``spktrain``.

Hydra imports every module in the ``hydra_plugins`` namespace package, so once the
package is installed ``spktrain experiment=molspectra_pretrain`` works from any directory.
"""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MolSpectraSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="schnetpack-molspectra", path="pkg://schnetpack_molspectra.configs")
