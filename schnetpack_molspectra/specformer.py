"""SpecFormer: a transformer over patches of UV-Vis, IR and Raman spectra.

Each modality's normalised spectrum (n_molecules, L) is cut into overlapping patches
(``unfold(P, D)``, N = floor((L - P) / D) + 1 patches; ``spectra.patches``), each patch is embedded by a
per-modality ``Linear(P, d_model)`` plus a learnable per-modality position table, and the
tokens of all modalities are concatenated (UV, IR, Raman) and encoded by a post-norm
transformer with BatchNorm and *residual attention*: every layer adds the previous
layer's pre-softmax scores to its own.

Residual attention as fused attention
-------------------------------------
With scale s, layer l's scores are ``S_l = s Q_l K_l^T + S_{l-1} = s [Q_1..Q_l][K_1..K_l]^T``,
so layer l is exact standard attention on queries/keys concatenated along the head
dimension. That lets every layer use ``F.scaled_dot_product_attention`` (a fused kernel
that never materialises the (N x N) score matrix) instead of explicit softmax(QK^T)V.
Head widths are zero-padded to a common width (zeros change neither scores nor output),
which keeps the fused kernel on its fast path. ``explicit=True`` computes the same
function with materialised scores (as released); ``attention_maps`` uses it for plots.

BatchNorm under DDP
-------------------
Each device normalises with its own batch's statistics by default (released). With
``sync_batchnorm=True`` the layers use :class:`SyncBatchNorm1d`: in training, inside a collective
step (``MolSpectraTask``'s steps), statistics over the tokens of every rank, identical to BatchNorm
on the concatenated batch, on any device and backend (torch's ``SyncBatchNorm`` needs GPU inputs).
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.distributed import distributed_world, gather_rows
from schnetpack_molspectra.spectra.patches import patch_geometry

__all__ = ["SpecFormer", "ResidualAttentionLayer", "SyncBatchNorm1d"]


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span every rank under DDP.

    Outside a collective step (``distributed.collective_step``), in eval mode or in a single
    process it is exactly ``nn.BatchNorm1d``; it has the same parameters and buffers, so state
    dicts move freely between the two. In training inside a collective step on W > 1 ranks, each
    rank's count, mean and sum of squared deviations per feature are gathered (differentiably,
    combined with the parallel-variance formula), so normalisation, gradients and running
    statistics are those of BatchNorm on the concatenated batch, identical on every rank.
    Works on CPU (gloo) and GPU (NCCL) alike.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, C) or (n, C, L) -> same shape."""
        _, world = distributed_world()
        if world == 1 or not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        flat = x if x.dim() == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])  # (n_values, C)
        flat = flat.to(torch.promote_types(flat.dtype, torch.float32))  # statistics in float32 at least
        n = flat.shape[0]
        mean = flat.sum(0) / max(n, 1)
        m2 = (flat - mean).pow(2).sum(0)
        local = torch.cat([flat.new_full((1,), float(n)), mean, m2])  # (1 + 2C,)
        stats, _ = gather_rows(local.unsqueeze(0), sizes=[1] * world)  # (world, 1 + 2C), gradient to every rank
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + self.num_features], stats[:, 1 + self.num_features :]
        total = counts.sum()
        global_mean = (counts * means).sum(0) / total
        global_m2 = (m2s + counts * (means - global_mean).pow(2)).sum(0)
        var = global_m2 / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(factor * global_mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - factor).add_(
                    factor * (global_m2 / (total - 1)).detach().to(self.running_var.dtype)
                )
        out = (flat - global_mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        out = out.to(x.dtype)
        return out if x.dim() == 2 else out.reshape(x.shape[0], -1, x.shape[1]).movedim(-1, 1)


class ResidualAttentionLayer(nn.Module):
    """One post-norm transformer layer with BatchNorm and residual attention.

    ``forward`` takes tokens (n_molecules, n_tokens, d_model) and the concatenated
    queries/keys of the previous layers (or None) and returns the new tokens and the
    updated concatenation. ``sync_batchnorm``: :class:`SyncBatchNorm1d` (statistics over all
    ranks under DDP) instead of per-device ``BatchNorm1d``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        residual_attention: bool = True,
        fused_head_width: int = 16,
        sync_batchnorm: bool = False,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.residual_attention = residual_attention
        self.fused_head_width = fused_head_width
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        norm = SyncBatchNorm1d if sync_batchnorm else nn.BatchNorm1d
        self.norm_attention = norm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff),
            {"gelu": nn.GELU(), "relu": nn.ReLU()}[activation],
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
        )
        self.norm_feed_forward = norm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys, values, each (n_molecules, n_heads, n_tokens, head_dim)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _batchnorm(self, norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm over the feature axis with statistics over molecules and tokens:
        # identical to BatchNorm1d on (b, d, n), without the two transposes.
        return norm(x.reshape(-1, x.shape[-1])).view_as(x)

    def forward(self, x: torch.Tensor, previous=None, explicit: bool = False):
        """Tokens (n_molecules, n_tokens, d_model) -> (new tokens, carried state).

        The carried state is what the next layer needs for residual attention: the
        concatenated queries/keys (fused path) or the pre-softmax scores (explicit path).
        """
        q, k, v = self._heads(x)
        if explicit:
            scores = q @ k.transpose(-1, -2) * self.head_dim**-0.5
            if self.residual_attention and previous is not None:
                scores = scores + previous
            attended = torch.softmax(scores, dim=-1) @ v
            carried = scores  # ignored by the next layer without residual attention
        else:
            if self.residual_attention and previous is not None:
                q = torch.cat([previous[0], q], dim=-1)
                k = torch.cat([previous[1], k], dim=-1)
            carried = (q, k) if self.residual_attention else None
            width = max(q.shape[-1], self.fused_head_width)
            pad = lambda t: F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t
            attended = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), scale=self.head_dim**-0.5)[
                ..., : self.head_dim
            ]
        b, _, n, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(b, n, -1)
        x = self._batchnorm(self.norm_attention, x + self.dropout(self.out(attended)))
        x = self._batchnorm(self.norm_feed_forward, x + self.dropout(self.feed_forward(x)))
        return x, carried


class SpecFormer(nn.Module):
    """Encoder of multi-modal spectra (see module docstring).

    Args:
        modalities: which spectra to use, in token order (subset of uv, ir, raman).
        patch_length: patch length P per modality (grid points; default
            ``spectra.patches.PATCH_LENGTH``).
        patch_stride: patch stride D per modality (grid points; default ``spectra.patches.PATCH_STRIDE``).
        spectrum_length: grid points L per modality (defaults to the QM9S grids).
        n_out: width of the spectrum representation (the 3D encoder's n_atom_basis).
        d_model, n_heads, n_layers, d_ff, dropout, activation: transformer sizes.
        residual_attention: add the previous layer's scores (released code: True).
        pooling: "flatten" (all tokens -> Linear, as released) or "mean" (mean over tokens -> Linear).
        position_init: half-width of the uniform init of the position tables.
        sync_batchnorm: under DDP, BatchNorm statistics over every rank's batch
            (:class:`SyncBatchNorm1d`); False (released): each device's own batch.
    """

    def __init__(
        self,
        modalities: Sequence[str] = msp.modalities,
        patch_length: Optional[Mapping[str, int]] = None,
        patch_stride: Optional[Mapping[str, int]] = None,
        spectrum_length: Optional[Mapping[str, int]] = None,
        n_out: int = 128,
        d_model: int = 128,
        n_heads: int = 16,
        n_layers: int = 3,
        d_ff: int = 256,
        dropout: float = 0.0,
        activation: str = "gelu",
        residual_attention: bool = True,
        pooling: str = "flatten",
        position_init: float = 0.02,
        sync_batchnorm: bool = False,
    ):
        super().__init__()
        if not modalities:
            raise ValueError("SpecFormer needs at least one modality")
        unknown = set(modalities) - set(msp.modalities)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {msp.modalities}")
        if pooling not in ("flatten", "mean"):
            raise ValueError(f"pooling must be 'flatten' or 'mean', got {pooling!r}")

        self.modalities: List[str] = list(modalities)
        geometry = patch_geometry(self.modalities, patch_length, patch_stride, spectrum_length)
        self.patch_length = {m: g.patch_length for m, g in geometry.items()}
        self.patch_stride = {m: g.patch_stride for m, g in geometry.items()}
        self.spectrum_length = {m: g.spectrum_length for m, g in geometry.items()}
        self.n_patches = {m: g.n_patches for m, g in geometry.items()}
        self.n_tokens = sum(self.n_patches.values())
        self.d_model = d_model
        self.pooling = pooling

        self.patch_embedding = nn.ModuleDict({m: nn.Linear(self.patch_length[m], d_model) for m in self.modalities})
        self.position = nn.ParameterDict(
            {
                m: nn.Parameter(torch.empty(self.n_patches[m], d_model).uniform_(-position_init, position_init))
                for m in self.modalities
            }
        )
        self.layers = nn.ModuleList(
            [
                ResidualAttentionLayer(
                    d_model, n_heads, d_ff, dropout, activation, residual_attention, sync_batchnorm=sync_batchnorm
                )
                for _ in range(n_layers)
            ]
        )
        n_pool = self.n_tokens * d_model if pooling == "flatten" else d_model
        self.pool = nn.Sequential(nn.Linear(n_pool, n_out), nn.LayerNorm(n_out))
        self.reconstruction = nn.ModuleDict({m: nn.Linear(d_model, self.patch_length[m]) for m in self.modalities})
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights and zero biases, as released, for the patch embeddings, the
        reconstruction heads, the flatten head, and in every layer the query/key/value
        projections (each its own d_model x d_model block of the fused ``qkv``) and the
        feed-forward layers. The attention output projection and the norms keep PyTorch's
        defaults (so does the released code)."""
        linears = [*self.patch_embedding.values(), *self.reconstruction.values(), self.pool[0]]
        for layer in self.layers:
            linears += [m for m in layer.feed_forward if isinstance(m, nn.Linear)]
            for block in layer.qkv.weight.data.chunk(3, dim=0):
                nn.init.xavier_uniform_(block)
            nn.init.zeros_(layer.qkv.bias)
        for linear in linears:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def patchify(self, spectrum: torch.Tensor, modality: str) -> torch.Tensor:
        """Patches (n_molecules, n_patches, patch_length) of a spectrum (n_molecules, L), a view."""
        if spectrum.shape[-1] != self.spectrum_length[modality]:
            raise ValueError(
                f"{modality} spectrum has {spectrum.shape[-1]} points, "
                f"SpecFormer expects {self.spectrum_length[modality]}"
            )
        return spectrum.unfold(-1, self.patch_length[modality], self.patch_stride[modality])

    def embed(self, patches: Dict[str, torch.Tensor], masks: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Tokens (n_molecules, n_tokens, d_model); masked patches are zero-filled first."""
        tokens = []
        for m in self.modalities:
            p = patches[m]
            if masks is not None and m in masks:
                p = p.masked_fill(masks[m].unsqueeze(-1), 0.0)
            tokens.append(self.patch_embedding[m](p) + self.position[m])
        return torch.cat(tokens, dim=1)

    def encode(self, tokens: torch.Tensor, explicit: bool = False) -> torch.Tensor:
        """Run the transformer layers on tokens (n_molecules, n_tokens, d_model).

        ``explicit=True`` materialises the attention scores (slower; as released)."""
        carried = None
        for layer in self.layers:
            tokens, carried = layer(tokens, carried, explicit)
        return tokens

    def forward(
        self,
        spectra: Dict[str, torch.Tensor],
        masks: Optional[Dict[str, torch.Tensor]] = None,
        explicit: bool = False,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Encode normalised spectra.

        Args:
            spectra: modality -> normalised spectrum (n_molecules, L).
            masks: modality -> boolean patch mask (n_molecules, n_patches), True = masked.
            explicit: materialise the attention scores instead of the fused kernel.

        Returns:
            representation (n_molecules, n_out), reconstructed patches per modality
            (n_molecules, n_patches, P) and the clean patches per modality (same shape, views).
        """
        patches = {m: self.patchify(spectra[m], m) for m in self.modalities}
        tokens = self.encode(self.embed(patches, masks), explicit)
        pooled = tokens.flatten(1) if self.pooling == "flatten" else tokens.mean(1)
        representation = self.pool(pooled)
        reconstructions = {}
        start = 0
        for m in self.modalities:
            stop = start + self.n_patches[m]
            reconstructions[m] = self.reconstruction[m](tokens[:, start:stop])
            start = stop
        return representation, reconstructions, patches

    @torch.no_grad()
    def attention_maps(
        self, spectra: Dict[str, torch.Tensor], masks: Optional[Dict[str, torch.Tensor]] = None
    ) -> List[torch.Tensor]:
        """Per-layer attention weights, each (n_molecules, n_heads, n_tokens, n_tokens).

        Token order is ``modalities`` concatenated; ``n_patches`` gives each block's size.
        """
        tokens = self.embed({m: self.patchify(spectra[m], m) for m in self.modalities}, masks)
        maps, scores = [], None
        for layer in self.layers:
            tokens, scores = layer(tokens, scores, explicit=True)
            maps.append(torch.softmax(scores, dim=-1))
        return maps
