"""Gated recurrent layers from scratch: the LSTM (d2l §10.1.2), the GRU (§10.2.4) and the stacked RNN (§10.3.1).

The book's parameters, names and initialisation: weights ``N(0, sigma^2)`` (sigma 0.01), biases zero, one
``(W_x*, W_h*, b_*)`` triple per gate. The layers take and give what `nn.LSTM`/`nn.GRU` do (time-major)::

    outputs, state = layer(inputs, state=None)   # inputs (num_steps, batch_size, num_inputs)
                                                 # outputs (num_steps, batch_size, num_hiddens), the top layer's H

so that a language model drives a scratch layer and its concise twin with the same code. Two changes to the book's
loop, neither changing what is computed: the layers return the outputs stacked into one tensor (the book returns a
list), and the input projections ``X_t W_x* + b_*`` of all time steps are one matrix product before the loop (the
book computes them step by step); a language model whose inputs are one-hot token vectors gathers rows of the input
weights instead (`input_weights`), which is the same product without the zeros.

The GRU's two forms. The book's candidate state (§10.2, eq. 10.2.2; Cho et al. 2014) resets H *before* the
recurrent product: ``tanh(X W_xh + (R * H) W_hh + b_h)``. PyTorch, cuDNN and ONNX's ``linear_before_reset=1`` reset
*after* it, with a second bias inside: ``tanh(X W_xh + b_h + R * (H W_hh + b_hn))``. ``(R * H) W = R * (H W)`` for
every H and R only when W is diagonal; so with the same weights (``b_hn = 0``) the two agree exactly when the
candidate's W_hh is diagonal (or each row of R is constant, e.g. R = 1), and not in general. `GRUScratch` is the
book's form by default; ``reset_after=True`` gives PyTorch's (it adds the parameter ``b_hn``), which loads
`nn.GRU`'s weights exactly (`load_torch_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CELLS = ("gru", "lstm")
"""The gated layers `StackedRNNScratch` and `zoo_modern_rnn.bidirectional.BiRNNScratch` stack."""


def _normal(*shape: int, sigma: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * sigma)


class _GatedScratch(nn.Module):
    """What the scratch LSTM and GRU share: the gates' input weights concatenated, and the loop's bookkeeping."""

    gates: tuple[str, ...] = ()  # the gate suffixes, in the order of `input_weights`' column blocks

    def __init__(self, num_inputs: int, num_hiddens: int, sigma: float = 0.01) -> None:
        super().__init__()
        self.num_inputs, self.num_hiddens, self.sigma = num_inputs, num_hiddens, sigma

    def triple(self) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """One gate's parameters: W_x (num_inputs, num_hiddens), W_h (num_hiddens, num_hiddens), b (num_hiddens,)."""
        return (_normal(self.num_inputs, self.num_hiddens, sigma=self.sigma),
                _normal(self.num_hiddens, self.num_hiddens, sigma=self.sigma),
                nn.Parameter(torch.zeros(self.num_hiddens)))

    def input_weights(self) -> tuple[Tensor, Tensor]:
        """``(W_x, b)``: every gate's input weights side by side, (num_inputs, G * num_hiddens), and biases,
        (G * num_hiddens,), so that ``X W_x + b`` is every gate's input term at once (G = ``len(self.gates)``)."""
        W_x = torch.cat([getattr(self, f"W_x{g}") for g in self.gates], dim=1)
        b = torch.cat([getattr(self, f"b_{g}") for g in self.gates])
        return W_x, b

    def forward(self, inputs: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        # inputs: (num_steps, batch_size, num_inputs)
        W_x, b = self.input_weights()
        return self.recur(inputs @ W_x + b, state)  # (num_steps, batch_size, G * num_hiddens)

    def recur(self, XW: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, ...]:
        """The loop over time on precomputed input terms ``XW = X W_x + b`` (num_steps, batch_size, G * h)."""
        raise NotImplementedError

    def zeros(self, XW: Tensor) -> Tensor:
        return XW.new_zeros(XW.shape[1], self.num_hiddens)  # (batch_size, num_hiddens)


class LSTMScratch(_GatedScratch):
    """The LSTM from scratch (d2l §10.1.2): input gate I, forget gate F, output gate O, input node C_tilde::

        I = sigmoid(X W_xi + H W_hi + b_i)    F = sigmoid(X W_xf + H W_hf + b_f)    O = sigmoid(X W_xo + H W_ho + b_o)
        C_tilde = tanh(X W_xc + H W_hc + b_c)    C = F * C + I * C_tilde    H = O * tanh(C)

    ``forward(inputs, H_C=None) -> (outputs, (H, C))``; inputs (num_steps, batch, num_inputs), outputs
    (num_steps, batch, num_hiddens), H and C (batch, num_hiddens), zeros when `H_C` is None.
    """

    gates = ("i", "f", "o", "c")

    def __init__(self, num_inputs: int, num_hiddens: int, sigma: float = 0.01) -> None:
        super().__init__(num_inputs, num_hiddens, sigma)
        self.W_xi, self.W_hi, self.b_i = self.triple()  # input gate
        self.W_xf, self.W_hf, self.b_f = self.triple()  # forget gate
        self.W_xo, self.W_ho, self.b_o = self.triple()  # output gate
        self.W_xc, self.W_hc, self.b_c = self.triple()  # input node

    def recur(self, XW: Tensor, H_C: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        H, C = (self.zeros(XW), self.zeros(XW)) if H_C is None else H_C
        W_h = torch.cat((self.W_hi, self.W_hf, self.W_ho, self.W_hc), dim=1)  # (num_hiddens, 4 * num_hiddens)
        h = self.num_hiddens
        outputs = []
        for XW_t in XW:  # XW_t: (batch_size, 4 * num_hiddens)
            gates = XW_t + H @ W_h
            IFO = torch.sigmoid(gates[:, :3 * h])
            I, F, O = IFO[:, :h], IFO[:, h:2 * h], IFO[:, 2 * h:]
            C_tilde = torch.tanh(gates[:, 3 * h:])
            C = F * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return torch.stack(outputs), (H, C)  # (num_steps, batch_size, num_hiddens)


class GRUScratch(_GatedScratch):
    """The GRU from scratch (d2l §10.2.4): update gate Z, reset gate R, candidate state H_tilde::

        Z = sigmoid(X W_xz + H W_hz + b_z)    R = sigmoid(X W_xr + H W_hr + b_r)
        H_tilde = tanh(X W_xh + (R * H) W_hh + b_h)          # the book's form (reset_after=False)
        H_tilde = tanh(X W_xh + b_h + R * (H W_hh + b_hn))   # PyTorch's form (reset_after=True)
        H = Z * H + (1 - Z) * H_tilde

    ``forward(inputs, H=None) -> (outputs, H)``; inputs (num_steps, batch, num_inputs), outputs
    (num_steps, batch, num_hiddens), H (batch, num_hiddens), zeros when None. The module docstring says when the
    two forms agree; ``reset_after=True`` adds the bias ``b_hn`` (zeros), PyTorch's ``bias_hh``'s candidate block.
    """

    gates = ("z", "r", "h")

    def __init__(self, num_inputs: int, num_hiddens: int, sigma: float = 0.01, reset_after: bool = False) -> None:
        super().__init__(num_inputs, num_hiddens, sigma)
        self.reset_after = reset_after
        self.W_xz, self.W_hz, self.b_z = self.triple()  # update gate
        self.W_xr, self.W_hr, self.b_r = self.triple()  # reset gate
        self.W_xh, self.W_hh, self.b_h = self.triple()  # candidate hidden state
        if reset_after:
            self.b_hn = nn.Parameter(torch.zeros(num_hiddens))

    def recur(self, XW: Tensor, H: Tensor | None = None) -> tuple[Tensor, Tensor]:
        H = self.zeros(XW) if H is None else H
        h = self.num_hiddens
        outputs = []
        if self.reset_after:  # one product H [W_hz W_hr W_hh] per step
            W_h = torch.cat((self.W_hz, self.W_hr, self.W_hh), dim=1)  # (num_hiddens, 3 * num_hiddens)
            for XW_t in XW:  # XW_t: (batch_size, 3 * num_hiddens)
                HW = H @ W_h
                ZR = torch.sigmoid(XW_t[:, :2 * h] + HW[:, :2 * h])
                Z, R = ZR[:, :h], ZR[:, h:]
                H_tilde = torch.tanh(XW_t[:, 2 * h:] + R * (HW[:, 2 * h:] + self.b_hn))
                H = Z * H + (1 - Z) * H_tilde
                outputs.append(H)
        else:  # the book's: the candidate's product waits for R
            W_h = torch.cat((self.W_hz, self.W_hr), dim=1)  # (num_hiddens, 2 * num_hiddens)
            for XW_t in XW:
                ZR = torch.sigmoid(XW_t[:, :2 * h] + H @ W_h)
                Z, R = ZR[:, :h], ZR[:, h:]
                H_tilde = torch.tanh(XW_t[:, 2 * h:] + (R * H) @ self.W_hh)
                H = Z * H + (1 - Z) * H_tilde
                outputs.append(H)
        return torch.stack(outputs), H  # (num_steps, batch_size, num_hiddens)


def make_cell(cell: str, num_inputs: int, num_hiddens: int, sigma: float = 0.01,
              reset_after: bool = False) -> LSTMScratch | GRUScratch:
    """A scratch layer by name: ``gru`` (`GRUScratch`, `reset_after` as given) or ``lstm`` (`LSTMScratch`)."""
    if cell == "gru":
        return GRUScratch(num_inputs, num_hiddens, sigma, reset_after=reset_after)
    if cell == "lstm":
        return LSTMScratch(num_inputs, num_hiddens, sigma)
    raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")


def stack_state(states: Sequence, cell: str) -> Tensor | tuple[Tensor, Tensor]:
    """Per-layer states -> `nn.GRU`/`nn.LSTM`'s layout: H (num_layers, batch, h), or (H, C) for an LSTM."""
    if cell == "lstm":
        return torch.stack([H for H, _ in states]), torch.stack([C for _, C in states])
    return torch.stack(list(states))


def unstack_state(state: Tensor | tuple[Tensor, Tensor] | None, num_layers: int, cell: str) -> list:
    """`nn.GRU`/`nn.LSTM`'s layout -> one state per layer (None: each layer starts from zeros)."""
    if state is None:
        return [None] * num_layers
    if cell == "lstm":
        return list(zip(state[0], state[1]))
    return list(state)


class StackedRNNScratch(nn.Module):
    """A deep RNN from scratch (d2l §10.3.1): `num_layers` scratch layers, each feeding its outputs to the next.

    ``forward(inputs, state=None) -> (outputs, state)`` with `nn.GRU`'s (`nn.LSTM`'s) shapes: inputs
    (num_steps, batch, num_inputs), outputs (num_steps, batch, num_hiddens) of the top layer, state
    (num_layers, batch, num_hiddens) (a pair (H, C) for ``cell="lstm"``). The book stacks its tanh `RNNScratch`
    although its text trains "a deep GRU" and its concise twin is a 2-layer `nn.GRU`; here the layer is chosen,
    ``gru`` by default, so that the two compute the same function (`reset_after=True`) or the book's GRU.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, num_layers: int, sigma: float = 0.01, cell: str = "gru",
                 reset_after: bool = False) -> None:
        super().__init__()
        self.num_inputs, self.num_hiddens, self.num_layers, self.cell = num_inputs, num_hiddens, num_layers, cell
        self.rnns = nn.Sequential(*[make_cell(cell, num_inputs if i == 0 else num_hiddens, num_hiddens, sigma,
                                              reset_after) for i in range(num_layers)])

    def input_weights(self) -> tuple[Tensor, Tensor]:
        """The first layer's `input_weights`: what a language model gathers its one-hot input terms from."""
        return self.rnns[0].input_weights()

    def forward(self, inputs: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        W_x, b = self.input_weights()
        return self.recur(inputs @ W_x + b, state)

    def recur(self, XW: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None
              ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """The stack on the first layer's precomputed input terms ``XW`` (num_steps, batch_size, G * num_hiddens)."""
        states = unstack_state(state, self.num_layers, self.cell)
        outputs, states[0] = self.rnns[0].recur(XW, states[0])
        for i in range(1, self.num_layers):
            outputs, states[i] = self.rnns[i](outputs, states[i])  # (num_steps, batch_size, num_hiddens)
        return outputs, stack_state(states, self.cell)


# --- weights in PyTorch's layout (nn.GRU / nn.LSTM), both ways ----------------------------------------------------
# nn.GRU packs its gates (r, z, n) and nn.LSTM (i, f, g, o) as rows of weight_ih_l{k} (G*h, in), weight_hh_l{k}
# (G*h, h), bias_ih_l{k} and bias_hh_l{k} (G*h,). The scratch layers keep one bias per gate: PyTorch's bias_ih,
# with bias_hh zero (the GRU's candidate block of bias_hh is b_hn, which only the reset_after form has).

_TORCH_ORDER = {"gru": ("r", "z", "h"), "lstm": ("i", "f", "c", "o")}


def torch_weights(layer: LSTMScratch | GRUScratch) -> dict[str, Tensor]:
    """A scratch layer's parameters as ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` of the PyTorch layer
    that computes the same function. A book-form GRU has none (`ValueError`): its reset acts before the product."""
    cell = "lstm" if isinstance(layer, LSTMScratch) else "gru"
    if cell == "gru" and not layer.reset_after:
        raise ValueError("the book's GRU (reset before the recurrent product) has no nn.GRU equivalent; "
                         "use GRUScratch(reset_after=True)")
    order = _TORCH_ORDER[cell]
    bias_hh = torch.zeros(len(order) * layer.num_hiddens)
    if cell == "gru":
        bias_hh[2 * layer.num_hiddens:] = layer.b_hn.detach()
    return {
        "weight_ih": torch.cat([getattr(layer, f"W_x{g}").detach().T for g in order]),
        "weight_hh": torch.cat([getattr(layer, f"W_h{g}").detach().T for g in order]),
        "bias_ih": torch.cat([getattr(layer, f"b_{g}").detach() for g in order]),
        "bias_hh": bias_hh,
    }


@torch.no_grad()
def load_torch_weights(layer: LSTMScratch | GRUScratch, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                       bias_hh: Tensor) -> None:
    """Copy one layer's (one direction's) weights of an `nn.GRU`/`nn.LSTM` into a scratch layer, which then
    computes the same function. PyTorch's two biases add up, except the GRU candidate's ``b_hn`` (which a book-form
    GRU cannot hold: `ValueError`)."""
    cell = "lstm" if isinstance(layer, LSTMScratch) else "gru"
    h = layer.num_hiddens
    b = bias_ih + bias_hh
    if cell == "gru":
        if layer.reset_after:
            layer.b_hn.copy_(bias_hh[2 * h:])
            b = torch.cat((b[:2 * h], bias_ih[2 * h:]))
        else:
            raise ValueError("the book's GRU (reset before the recurrent product) cannot load nn.GRU weights; "
                             "use GRUScratch(reset_after=True)")
    for k, g in enumerate(_TORCH_ORDER[cell]):
        rows = slice(k * h, (k + 1) * h)
        getattr(layer, f"W_x{g}").copy_(weight_ih[rows].T)
        getattr(layer, f"W_h{g}").copy_(weight_hh[rows].T)
        getattr(layer, f"b_{g}").copy_(b[rows])


def load_from_torch(scratch: StackedRNNScratch, rnn: nn.GRU | nn.LSTM) -> None:
    """Copy an `nn.GRU`/`nn.LSTM` (unidirectional, as many layers) into a `StackedRNNScratch`."""
    if rnn.num_layers != scratch.num_layers or rnn.bidirectional:
        raise ValueError(f"cannot load a {rnn} into a {scratch.num_layers}-layer unidirectional stack")
    for k, layer in enumerate(scratch.rnns):
        load_torch_weights(layer, *(getattr(rnn, f"{name}_l{k}") for name in
                                    ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
