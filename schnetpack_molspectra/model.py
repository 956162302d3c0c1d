"""The MolSpectra pre-training model: a SchNetPack representation and SpecFormer in one forward pass."""
from typing import Dict, List, Optional

import torch
from torch import nn
from schnetpack.model import AtomisticModel
from schnetpack.transform import Transform

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import DenoisingHead
from schnetpack_molspectra.specformer import SpecFormer

__all__ = ["MolSpectraModel"]


class MolSpectraModel(AtomisticModel):
    """3D encoder + SpecFormer, for the three MolSpectra objectives.

    The 3D side runs ``input_modules`` (e.g. ``PairwiseDistances``), the SchNetPack
    ``representation`` (any: PaiNN, SchNet, SO3net, ...) on the noisy positions and the
    ``output_modules`` (denoising head, pooled 3D representation). The spectra side runs
    ``specformer`` on the normalised, masked spectra and writes
    ``representation_spectra`` (n_molecules, n_out) and, per modality, the reconstructed
    and the clean patches at the masked positions (n_masked_patches, P). With
    ``specformer=None`` this is a denoising-only model (stage 1).

    The encoder is ``self.representation``, as in ``NeuralNetworkPotential``, so a
    fine-tuning model can take its weights (``schnetpack_molspectra.pretrained``).
    ``init_from`` (a stage-1 ``best_model`` or checkpoint) initialises the encoder and, with
    ``pretrained_denoising_head`` (released behaviour), the denoising head and its noise statistics.
    """

    def __init__(
        self,
        representation: nn.Module,
        output_modules: List[nn.Module],
        specformer: Optional[SpecFormer] = None,
        input_modules: Optional[List[nn.Module]] = None,
        postprocessors: Optional[List[Transform]] = None,
        input_dtype_str: str = "float32",
        do_postprocessing: bool = False,
        init_from: Optional[str] = None,
        pretrained_denoising_head: bool = True,
    ):
        super().__init__(
            postprocessors=postprocessors,
            input_dtype_str=input_dtype_str,
            do_postprocessing=do_postprocessing,
        )
        self.representation = representation
        self.input_modules = nn.ModuleList(input_modules)
        self.output_modules = nn.ModuleList(output_modules)
        self.specformer = specformer
        for module in self.output_modules:
            if isinstance(module, DenoisingHead):
                module.resolve_mode(representation)
        if init_from is not None:
            from schnetpack_molspectra.pretrained import load_pretrained_weights

            load_pretrained_weights(self, init_from, denoising_head=pretrained_denoising_head)
        self.collect_derivatives()
        self.collect_outputs()
        if specformer is not None:
            self.model_outputs = self.model_outputs + self.spectra_outputs

    @property
    def spectra_outputs(self) -> List[str]:
        keys = [msp.representation_spectra]
        for m in self.specformer.modalities:
            keys += [msp.reconstructed_patches(m), msp.target_patches(m)]
        return keys

    def encode_spectra(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run SpecFormer on the batch's spectra and patch masks; write its outputs to ``inputs``."""
        spectra, masks = {}, {}
        for m in self.specformer.modalities:
            key = msp.spectra[m]
            if key not in inputs:
                raise KeyError(f"batch has no '{key}'; the {m} modality is enabled in SpecFormer")
            spectra[m] = inputs[key]
            if msp.patch_mask(m) in inputs:
                masks[m] = inputs[msp.patch_mask(m)]
        representation, reconstructions, patches = self.specformer(spectra, masks)
        inputs[msp.representation_spectra] = representation
        for m in self.specformer.modalities:
            recon, clean = reconstructions[m], patches[m]
            if m in masks:
                recon, clean = recon[masks[m]], clean[masks[m]]
            inputs[msp.reconstructed_patches(m)] = recon.reshape(-1, recon.shape[-1])
            inputs[msp.target_patches(m)] = clean.reshape(-1, clean.shape[-1])
        return inputs

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        inputs = self.initialize_derivatives(inputs)
        for m in self.input_modules:
            inputs = m(inputs)
        inputs = self.representation(inputs)
        for m in self.output_modules:
            inputs = m(inputs)
        if self.specformer is not None:
            inputs = self.encode_spectra(inputs)
        inputs = self.postprocess(inputs)
        return self.extract_outputs(inputs)

    def extract_outputs(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Model outputs present in this batch (the denoising target exists only for noisy inputs)."""
        return {k: inputs[k] for k in self.model_outputs if k in inputs}
