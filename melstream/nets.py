"""Torch definitions of the example addons' networks (needs torch; imported only by the torch
runner and by the scripts that export addons).

Architectures are registered by name, like components: an addon's ``networks.<n>.arch`` names one
and its config, and the torch runner rebuilds the module and fills it with the parameters stored
in the network's ONNX file (no pickle).  Every network takes and returns a leading batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from melstream.errors import RegistryError

NETS: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register_net(name: str) -> Callable[[M], M]:
    def wrap(cls: M) -> M:
        if name in NETS:
            raise RegistryError(f"network architecture {name!r} is already registered")
        NETS[name] = cls
        return cls

    return wrap


def build_net(arch: dict[str, Any]) -> nn.Module:
    try:
        cls = NETS[arch["type"]]
    except KeyError:
        raise RegistryError(f"unknown network architecture {arch['type']!r}; known: {', '.join(sorted(NETS))}") from None
    return cls(**arch.get("config", {}))


class ConvStack(nn.Module):
    """Residual 1-D convolutions over ``[B, T, C]`` with zero 'same' padding (receptive half-width
    ``layers * (kernel - 1) // 2`` frames)."""

    def __init__(self, channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=kernel // 2) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(h))
        return h.transpose(1, 2)


@register_net("ConvTextEncoder")
class ConvTextEncoder(nn.Module):
    """tokens ``[B, N]`` int64 → encodings ``[B, N, dim]``."""

    def __init__(self, num_symbols: int, dim: int = 128, layers: int = 3, kernel: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_symbols, dim)
        self.convs = ConvStack(dim, layers, kernel)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.convs(self.embed(tokens)))


@register_net("DurationPredictor")
class DurationPredictor(nn.Module):
    """tokens ``[B, N]`` int64 → durations ``[B, N]`` float32, frames per token (≥ 0)."""

    def __init__(self, num_symbols: int, dim: int = 64, layers: int = 2, kernel: int = 3,
                 mean_frames: float = 6.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_symbols, dim)
        self.convs = ConvStack(dim, layers, kernel)
        self.proj = nn.Linear(dim, 1)
        self.mean_frames = mean_frames

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.embed(tokens))
        return self.mean_frames * torch.exp(torch.tanh(self.proj(h).squeeze(-1)))


@register_net("ConvDecoder")
class ConvDecoder(nn.Module):
    """upsampled ``[B, T, in_dim]`` → mel ``[B, T, n_mels]``; receptive half-width
    ``layers * (kernel - 1) // 2`` frames on each side (the addon's ``context_frames``)."""

    def __init__(self, in_dim: int = 128, hidden: int = 256, n_mels: int = 80, layers: int = 3, kernel: int = 5) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = ConvStack(hidden, layers, kernel)
        self.out = nn.Linear(hidden, n_mels)

    def forward(self, upsampled: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(self.inp(upsampled)))


@register_net("AttentionEncoder")
class AttentionEncoder(ConvTextEncoder):
    """tokens ``[B, N]`` int64 → memory ``[B, N, dim]`` (same body as the text encoder)."""


@register_net("AttentionDecoderStep")
class AttentionDecoderStep(nn.Module):
    """One autoregressive step with forward (monotonic) attention.

    Inputs: prev_mel ``[B, n_mels]``, state ``[B, hidden]``, alignment ``[B, N]``, memory ``[B, N, dim]``.
    Outputs: mel ``[B, n_mels]``, stop_logit ``[B, 1]``, state_out ``[B, hidden]``, alignment_out ``[B, N]``.
    Attention moves forward by a learned transition probability (Zhang et al. 2018) that sees the
    decoder state, the attended memory and the memory one token ahead, so it cannot skip back or
    jump; the stop logit sees how much attention sits on the last token (the end symbol).  With
    ``hard`` the decoder reads only the most likely token of the alignment (which stays soft).

    Optional length ``[B, 1]`` int64: the memory's true size.  Masking rule: memory at or past ``length`` is
    padding and is zeroed (no weight, and nothing to read one token ahead of the end); the end token is the
    one at ``length - 1``, so the stop logit and the end's kept mass see the true last token.  Padded
    alignment (0 in, as the integration layer pads) stays 0: mass never moves past the end token.  A length
    beyond the memory's size means the end lies outside it (a window of a longer memory): no end token then.
    """

    def __init__(self, n_mels: int = 80, dim: int = 128, hidden: int = 256, prenet: int = 128,
                 advance_bias: float = -1.6, prenet_dropout: float = 0.0, hard: bool = False) -> None:
        super().__init__()
        self.hard = hard
        self.prenet = nn.Linear(n_mels, prenet)
        self.prenet_dropout = nn.Dropout(prenet_dropout)  # active in training only (export runs eval mode)
        self.rnn = nn.GRUCell(prenet + dim, hidden)
        self.advance = nn.Linear(hidden + 2 * dim, 1)
        with torch.no_grad():
            self.advance.weight.mul_(0.1)
            self.advance.bias.fill_(advance_bias)
        self.mel = nn.Linear(hidden + dim, n_mels)
        self.stop = nn.Linear(hidden + dim, 1)
        with torch.no_grad():
            self.stop.weight.mul_(0.01)
            self.stop.bias.zero_()
        self.stop_gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, prev_mel: torch.Tensor, state: torch.Tensor, alignment: torch.Tensor, memory: torch.Tensor,
                length: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # end_mask [B, N] marks each utterance's last token (training pads batches, and calls step); by default
        # the last column
        if length is not None:
            positions = torch.arange(alignment.shape[1], device=length.device).unsqueeze(0)
            memory = memory * (positions < length).float().unsqueeze(-1)
            end_mask = (positions == length - 1).float()
        else:
            end_mask = torch.cat([torch.zeros_like(alignment[:, :-1]), torch.ones_like(alignment[:, -1:])], dim=1)
        mel, stop, state, alignment, _ = self.step(prev_mel, state, alignment, memory, end_mask)
        return mel, stop, state, alignment

    def step(self, prev_mel: torch.Tensor, state: torch.Tensor, alignment: torch.Tensor, memory: torch.Tensor,
             end_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s outputs plus the advance logit ``[B, 1]`` (training supervises it)."""
        attend = alignment
        if self.hard:
            # read one token, the most likely one, as in training (where each step starts from the
            # teacher's token); the alignment itself stays a distribution that the advance probability
            # moves forward, so the chance of having moved on accumulates over frames
            positions = torch.cumsum(torch.ones_like(alignment), dim=1) - 1
            attend = (positions == alignment.argmax(dim=1, keepdim=True).float()).float()
        context = torch.bmm(attend.unsqueeze(1), memory).squeeze(1)
        state = self.rnn(torch.cat([self.prenet_dropout(torch.relu(self.prenet(prev_mel))), context], dim=-1), state)
        # what comes next: the memory one token ahead of the attention (forward attention reaches it this step)
        ahead = torch.cat([torch.zeros_like(attend[:, :1]), attend[:, :-1]], dim=1)
        upcoming = torch.bmm(ahead.unsqueeze(1), memory).squeeze(1)
        advance = self.advance(torch.cat([state, context, upcoming], dim=-1))
        p = torch.sigmoid(advance)
        moving = alignment * (1 - end_mask)  # the end token keeps its mass; nothing moves past it
        shifted = torch.cat([torch.zeros_like(moving[:, :1]), moving[:, :-1]], dim=1)
        alignment = (1 - p) * alignment + p * shifted + p * alignment * end_mask
        attend = alignment
        if self.hard and not self.training:  # training reads the soft alignment here (as the voices were trained)
            attend = (positions == alignment.argmax(dim=1, keepdim=True).float()).float()
        context = torch.bmm(attend.unsqueeze(1), memory).squeeze(1)
        h = torch.cat([state, context], dim=-1)
        stop = self.stop(h) + self.stop_gain * ((alignment * end_mask).sum(-1, keepdim=True) - 0.5)
        return self.mel(h), stop, state, alignment, advance


# --- trained voices (training/): layer-normalised residual convolutions, masks for padded batches ---

def length_mask(length: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size, 1]`` float: 1 at the first ``length[b, 0]`` positions of each row, 0 after them.

    ``length`` ``[B, 1]`` int64 is the true size of a padded variable axis (an exported network's length
    input): the fixed-shape integration layer pads inputs to a compiled size and says how much is real."""
    positions = torch.arange(size, device=length.device).unsqueeze(0)
    return (positions < length).float().unsqueeze(-1)


class NormConvStack(nn.Module):
    """Residual blocks ``x + dropout(LayerNorm(relu(conv(x))))`` over ``[B, T, C]``; receptive
    half-width ``layers * (kernel - 1) // 2``.  ``mask`` ``[B, T, 1]`` (training only) zeroes padding
    after every block so padded batches compute what single utterances compute."""

    def __init__(self, channels: int, layers: int, kernel: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=kernel // 2) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(conv(x.transpose(1, 2))).transpose(1, 2)
            x = x + self.dropout(norm(h))
            if mask is not None:
                x = x * mask
        return x


@register_net("PhonemeEncoder")
class PhonemeEncoder(nn.Module):
    """tokens ``[B, N]`` int64 (and optionally length ``[B, 1]`` int64) → encodings ``[B, N, dim]`` (also used
    as attention memory).

    Masking rule: tokens at or past ``length`` are padding; they are zeroed before the first block and after
    every block, which is exactly the zero 'same' padding an unpadded run sees past its end, so every real
    token's encoding equals the unpadded one (padding's own encodings are 0)."""

    def __init__(self, num_symbols: int, dim: int = 192, layers: int = 4, kernel: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_symbols, dim, padding_idx=0)
        self.convs = NormConvStack(dim, layers, kernel, dropout)

    def forward(self, tokens: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        return self.masked(tokens, None if length is None else length_mask(length, tokens.shape[1]))

    def masked(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`forward` with a ``[B, N, 1]`` float mask (training's padded batches) in place of a length."""
        x = self.embed(tokens)
        return self.convs(x if mask is None else x * mask, mask)


@register_net("PhonemeDurationPredictor")
class PhonemeDurationPredictor(nn.Module):
    """tokens ``[B, N]`` int64 (and optionally length ``[B, 1]`` int64) → durations ``[B, N]`` float32 frames
    (``exp(log_d) - 1``, ≥ 0).

    Masking rule: as :class:`PhonemeEncoder`'s (padding zeroed before and after every block, so real tokens
    get their unpadded durations), and a padded token is given 0 frames."""

    def __init__(self, num_symbols: int, dim: int = 128, layers: int = 3, kernel: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_symbols, dim, padding_idx=0)
        self.convs = NormConvStack(dim, layers, kernel, dropout)
        self.proj = nn.Linear(dim, 1)

    def log_durations(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)
        return self.proj(self.convs(x if mask is None else x * mask, mask)).squeeze(-1)

    def forward(self, tokens: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        if length is None:
            return torch.relu(torch.exp(self.log_durations(tokens)) - 1.0)
        mask = length_mask(length, tokens.shape[1])
        return torch.relu(torch.exp(self.log_durations(tokens, mask)) - 1.0) * mask.squeeze(-1)


@register_net("MelDecoder")
class MelDecoder(nn.Module):
    """upsampled ``[B, T, in_dim]`` (and optionally length ``[B, 1]`` int64) → mel ``[B, T, n_mels]``;
    receptive half-width ``layers * (kernel - 1) // 2`` frames (the addon's ``context_frames``).

    Masking rule: frames at or past ``length`` are padding, zeroed after the input projection and after every
    block (the zero 'same' padding an unpadded run sees), so real frames equal the unpadded ones; padded
    frames' mel is the output layer's bias and is cropped by the integration layer."""

    def __init__(self, in_dim: int = 192, hidden: int = 256, n_mels: int = 80, layers: int = 6, kernel: int = 5,
                 dropout: float = 0.0, mel_mean: float = -5.0) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = NormConvStack(hidden, layers, kernel, dropout)
        self.out = nn.Linear(hidden, n_mels)
        with torch.no_grad():
            self.out.bias.fill_(mel_mean)

    def forward(self, upsampled: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        return self.masked(upsampled, None if length is None else length_mask(length, upsampled.shape[1]))

    def masked(self, upsampled: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`forward` with a ``[B, T, 1]`` float mask (training's padded batches) in place of a length."""
        h = self.inp(upsampled)
        return self.out(self.convs(h if mask is None else h * mask, mask))
