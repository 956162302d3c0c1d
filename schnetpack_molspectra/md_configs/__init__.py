"""The configs ``spkmd`` needs and SchNetPack's wheels (2.1.1, 2.2.0) leave out of ``schnetpack/md/md_configs``.

``hydra_plugins/molspectra_searchpath`` puts this package on ``spkmd``'s search path (and
``schnetpack_molspectra.configs`` on ``spktrain``'s), so that once the plugin is installed

    spkmd simulation_dir=md_run system.molecule_file=ethanol.xyz calculator.model_file=runs/<id>/best_model

runs MD with a fine-tuned model (``md17_finetune``: energy in kcal/mol, forces by autograd).
Groups: ``calculator`` (spk), ``calculator/neighbor_list`` (matscipy, ase, torch), ``system``,
``dynamics`` (nve, nvt: Langevin), ``callbacks`` (default: checkpoint and HDF5 log, none).
"""
