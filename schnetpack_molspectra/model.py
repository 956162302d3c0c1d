"""The one model class of every MolSpectra experiment: SchNetPack's ``NeuralNetworkPotential``."""

from typing import Dict, List, Optional

import torch
from schnetpack.model import NeuralNetworkPotential
from schnetpack.transform import Transform
from torch import nn

from schnetpack_molspectra.atomistic import DenoisingHead
from schnetpack_molspectra.pretrained import load_pretrained_weights

__all__ = ["MolSpectraModel", "TRUST_OPT_IN"]

#: how a spktrain user trusts a pre-trained model that is not their own run's (named in the error)
TRUST_OPT_IN = "globals.trust_pretrained_model=true (MolSpectraModel(trust_pretrained_model=True) in Python)"


class MolSpectraModel(NeuralNetworkPotential):
    """``NeuralNetworkPotential`` for pre-training and fine-tuning, with three additions:

    - a ``DenoisingHead(mode="auto")`` among the output modules is resolved against the
      ``representation`` (vector head on PaiNN/SO3net, gradient head otherwise) before
      SchNetPack collects the required derivatives;
    - ``pretrained_model`` (a pre-training ``best_model``, Lightning checkpoint, weights file or
      shipped model's name) initialises the encoder and, with ``pretrained_denoising_head``
      (released behaviour), the denoising head with its noise statistics, and with
      ``pretrained_spectra_encoder`` SpecFormer too (a MolSpectra pre-training continued from an
      earlier one, and with ``pretrained_spectra_head`` the ``SpectraHead`` (a spectra fine-tuning
      continued) (``schnetpack_molspectra.pretrained``), at construction, i.e. before any
      training; ``None`` trains from scratch. A file that only full unpickling reads (a
      ``best_model``, a checkpoint) is read only when a run of yours wrote it, or with
      ``trust_pretrained_model`` (``globals.trust_pretrained_model=true``): unpickling runs the
      code a file holds. Weights files and shipped names are read without unpickling;
    - outputs missing from a batch are left out of the results (a denoising target exists only
      for batches whose positions were perturbed, e.g. only the training split while fine-tuning).

    Pre-training lists its heads as ``output_modules``: ``DenoisingHead``,
    ``MoleculeRepresentation`` (the 3D side of the contrastive loss) and ``SpectraEncoder``
    (SpecFormer on the batch's spectra); ``collect_outputs`` gathers their ``model_outputs``.
    """

    def __init__(
        self,
        representation: nn.Module,
        input_modules: Optional[List[nn.Module]] = None,
        output_modules: Optional[List[nn.Module]] = None,
        postprocessors: Optional[List[Transform]] = None,
        input_dtype_str: str = "float32",
        do_postprocessing: bool = True,
        pretrained_model: Optional[str] = None,
        pretrained_denoising_head: bool = True,
        pretrained_spectra_encoder: bool = False,
        trust_pretrained_model: bool = False,
        pretrained_spectra_head: bool = False,
    ):
        for module in output_modules or []:
            if isinstance(module, DenoisingHead):
                module.resolve_mode(representation)
        super().__init__(
            representation,
            input_modules=input_modules,
            output_modules=output_modules,
            postprocessors=postprocessors,
            input_dtype_str=input_dtype_str,
            do_postprocessing=do_postprocessing,
        )
        self.pretrained_model = pretrained_model
        if pretrained_model is not None:
            load_pretrained_weights(
                self,
                pretrained_model,
                denoising_head=pretrained_denoising_head,
                spectra_encoder=pretrained_spectra_encoder,
                trust=trust_pretrained_model,
                opt_in=TRUST_OPT_IN,
                spectra_head=pretrained_spectra_head,
            )

    def extract_outputs(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Model outputs present in this batch."""
        return {k: inputs[k] for k in self.model_outputs if k in inputs}
