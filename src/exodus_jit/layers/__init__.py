"""sinabs-compatible layers running on exodus-jit's kernels.

Each class subclasses its sinabs counterpart (so `isinstance`, state handling, `reset_states`,
`arg_dict`, deepcopy and `.to()` behave as in sinabs) and replaces only the time loop. Migration
is one import line: ``from exodus_jit.layers import LIF``.
"""

from typing import Callable, Optional, Union

import sinabs.layers as sl
import torch
from sinabs.activation import MembraneSubtract, MultiSpike, SingleExponential

from .. import ops
from ._translate import neuron_kwargs

__all__ = ["IAF", "IAFSqueeze", "LIF", "LIFSqueeze", "ExpLeak", "ExpLeakSqueeze"]


class ExodusNeuronMixin:
    """The exodus forward pass shared by all layers; it holds no kernel logic (see `ops`)."""

    decay_early: bool

    def _exodus_forward(self, input_data: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            held = self.__dict__.get("_exodus_call")
            if held is not None and held[2] and type(input_data) is torch.Tensor:
                output = self._forward_kept(input_data, held[0], held[1])
                if output is not None:
                    return output
        batch_size, time_steps, *trailing_dim = input_data.shape
        state_shape = (batch_size, *trailing_dim)
        buffers = self._buffers
        for b in buffers.values():
            if b is None or b.shape != state_shape:
                # State bookkeeping exactly as sinabs.layers.LIF.forward does it (the check above
                # is its state_has_shape, cheaper per call).
                if not self.is_state_initialised():
                    self.init_state_with_shape(state_shape)
                if not self.state_has_shape(state_shape):
                    if not self.has_trailing_dimension(trailing_dim):
                        self.init_state_with_shape(state_shape)
                    else:
                        self.handle_state_batch_size_mismatch(batch_size)
                break

        alpha_syn = self._alpha_syn()
        recordings = {}
        current = input_data
        # i_t = a (i_{t-1} + x_t), as sinabs, inside the membrane kernels
        fused = alpha_syn is not None and self.decay_early and self.spike_fn is not None and not self.record_states
        if alpha_syn is not None and not fused:
            if self.decay_early:  # i_t = a (i_{t-1} + x_t), as sinabs
                current, i_final = ops.synaptic_current(input_data, self.i_syn, alpha_syn)
            else:  # i_t = a i_{t-1} + x_t: the leaky integrator without clipping
                late = ops.membrane(input_data, self.i_syn, alpha_syn, spike="none")
                current, i_final = late.output, late.v_final
            buffers["i_syn"] = _owned(i_final)  # what `self.i_syn = ...` does
            if self.record_states:
                recordings["i_syn"] = current
        if self.spike_fn is None and self.decay_early:
            # the input decays within its own step (sinabs-exodus option)
            current = current * self.alpha_mem_calculated.to(current.device)
        # kept for _forward_kept where nothing runs around the membrane's operator
        plain = not self.record_states and (fused or (alpha_syn is None and not (self.spike_fn is None and self.decay_early)))
        call = self._membrane_call(current, alpha_syn if fused else None, plain)
        result = call(current, buffers["v_mem"], buffers["i_syn"] if fused else None)
        buffers["v_mem"] = _owned(result.v_final)
        if fused:
            buffers["i_syn"] = _owned(result.i_final)
        if self.record_states:
            recordings["v_mem"] = result.v_rec
        self._keep_outputs(result.output, result.output_sum, result.v_zero, result.i_zero, recordings)
        return result.output

    def _forward_kept(self, input_data: torch.Tensor, key: tuple, call: ops.MembraneCall) -> Optional[torch.Tensor]:
        """The common forward, as the general path makes it but only the steps that apply: the
        call kept by _membrane_call still matches the input and the parameters, the states have
        the input's shape already, and nothing runs around the membrane's operator (no synaptic
        stage apart from it, no input decay, no recordings: `plain`). None where another step
        is needed; then the general path runs."""
        dtype, device, features, fused, pointers = key
        if (input_data.dtype is not dtype or input_data.shape[2:] != features or input_data.device != device
                or pointers != [p.data_ptr() for p in self._parameters.values() if p is not None]):
            return None
        buffers = self._buffers
        v_mem = buffers["v_mem"]
        i_syn = buffers["i_syn"] if fused else None
        batch_size = input_data.shape[0]
        if (v_mem is None or v_mem.shape[0] != batch_size or v_mem.shape[1:] != features
                or (fused and (i_syn is None or i_syn.shape != v_mem.shape))):
            return None  # states to initialise or resize first
        outputs = call.direct(input_data, v_mem, i_syn)
        if outputs is None:
            return None
        output, _, v_final, output_sum, i_final, v_zero, i_zero = outputs
        buffers["v_mem"] = v_final
        if fused:
            buffers["i_syn"] = i_final
        self._keep_outputs(output, output_sum, v_zero, i_zero, {})
        return output

    def _keep_outputs(self, output: torch.Tensor, output_sum: torch.Tensor, v_zero: Optional[torch.Tensor],
                      i_zero: Optional[torch.Tensor], recordings: dict) -> None:
        """What a forward keeps besides the states: the kernel's fresh zeros for the next
        reset_states (_taken_zeros checks they cover every state: a synaptic stage run apart from
        the kernel has none), the recordings and the firing rate's sums."""
        zeros = None
        if v_zero is not None:
            zeros = {"v_mem": v_zero} if i_zero is None else {"v_mem": v_zero, "i_syn": i_zero}
        # plain attributes: what nn.Module.__setattr__ ends with, minus its per-call lookups
        attributes = self.__dict__
        attributes["_exodus_zeros"] = zeros
        attributes["recordings"] = recordings
        # sinabs sets firing_rate = output.mean(); the kernels' per-neuron sums give it without a
        # pass over the output, computed when first read
        attributes["_firing_rate"] = (output_sum, output.numel(), output.dtype)

    @property
    def firing_rate(self) -> torch.Tensor:
        """Mean output (spikes per neuron and step) of the last forward pass, as in sinabs;
        differentiable."""
        rate = self.__dict__.get("_firing_rate")
        if rate is None:
            raise AttributeError(f"'{type(self).__name__}' has no firing_rate before its first forward pass")
        if isinstance(rate, tuple):
            output_sum, numel, dtype = rate
            rate = (output_sum.sum() / numel).to(dtype)
            self.__dict__["_firing_rate"] = rate
        return rate

    @firing_rate.setter
    def firing_rate(self, value: torch.Tensor) -> None:
        self.__dict__["_firing_rate"] = value

    def _membrane_call(self, current: torch.Tensor, alpha_syn, plain: bool) -> ops.MembraneCall:
        """The membrane op for this layer's parameters and options, resolved once
        (ops.MembraneCall) and kept while the input's dtype, device and neuron shape and the
        parameters' storage stay; reassigned attributes drop it (__setattr__, _apply). Kept only
        where MembraneCall.reusable (parameters read live, no autograd graph of its own: an alpha
        trained as itself is resolved again per call), with `plain` (whether _forward_kept may
        make the layer's next calls with it). The call picks the backend per call."""
        compiling = torch.compiler.is_compiling()
        if not compiling:
            key = (current.dtype, current.device, current.shape[2:], alpha_syn is not None,
                   [p.data_ptr() for p in self._parameters.values() if p is not None])  # compared, not hashed
            held = self.__dict__.get("_exodus_call")
            if held is not None and held[0] == key and held[2] == plain:
                return held[1]
        threshold = 1.0 if self.spike_fn is None else self.spike_threshold
        call = ops.MembraneCall(current, self._alpha_mem(), threshold, min_v_mem=self.min_v_mem,
                                norm_input=self.norm_input, record_states=self.record_states, sum_output=True,
                                alpha_syn=alpha_syn, zero_states=True, **self._kernel_options())
        if not compiling and call.reusable:
            self.__dict__["_exodus_call"] = (key, call, plain)
        return call

    def reset_states(self, randomize: bool = False, value_ranges=None) -> None:
        """Reset the states (buffers) to zero, as sinabs' reset_states does; with randomize,
        sinabs' own (see sinabs.layers.StatefulLayer.reset_states). After a forward pass on the
        compiled kernels the states become the fresh zeros its kernel wrote (no launch; the
        tensors the states were before are left as they are, not zeroed in place); otherwise they
        are zeroed in place in one launch for all states."""
        zeros = self.__dict__.pop("_exodus_zeros", None)
        if zeros is not None and not randomize and self._taken_zeros(zeros):
            self._buffers.update(zeros)
            return
        buffers = [b for b in self._buffers.values() if b is not None]
        if randomize or self._modules or any(b.shape == (0,) for b in buffers):
            return super().reset_states(randomize, value_ranges)
        for b in buffers:
            b.detach_()  # first: then zeroing records no autograd history, without a no_grad block
        torch._foreach_zero_(buffers)

    def _taken_zeros(self, zeros: dict) -> bool:
        """Whether `zeros` (from the last forward, never handed out before) can be the states: one
        for each state, each of its shape, dtype and device; not while torch.compile traces (its
        graphs zero the states as they are), nor those of a forward in inference mode outside it
        (autograd could not save them; the states are then reset as sinabs does)."""
        if self._modules or torch.compiler.is_compiling():
            return False
        if zeros["v_mem"].is_inference() and not torch.is_inference_mode_enabled():
            return False
        # one pass (this runs in every reset_states): each state has its zero, and no zero is left
        states = 0
        for name, b in self._buffers.items():
            if b is None:
                continue
            zero = zeros.get(name)
            if zero is None or b.shape != zero.shape or b.dtype != zero.dtype or b.device != zero.device:
                return False
            states += 1
        return states == len(zeros)

    def __getstate__(self) -> dict:
        # torch.save(model), pickle and multiprocessing leave out the per-call caches: the kept
        # call holds the compiled operator's handles, which do not pickle, and the zeros are for
        # this layer's own next reset; the next call makes them again
        getstate = getattr(super(), "__getstate__", None)  # object's from Python 3.11 on
        state = dict(getstate() if getstate is not None else self.__dict__)
        state.pop("_exodus_call", None)
        state.pop("_exodus_zeros", None)
        return state

    def _apply(self, *args, **kwargs):
        self.__dict__.pop("_exodus_call", None)  # .to(), .cuda(), .double() ... move the parameters
        self.__dict__.pop("_exodus_zeros", None)  # states moved: zeros of the old device or dtype
        return super()._apply(*args, **kwargs)

    def _alpha_mem(self):
        """alpha_mem_calculated for the ops: from tau_mem as ops.Decay (no autograd graph per call)."""
        calculated = type(self).alpha_mem_calculated
        if calculated is sl.IAF.alpha_mem_calculated:
            # sinabs' IAF returns a new CPU tensor(1.) per call: as the number it is, the layer's
            # call stays reusable on any device (a CPU tensor turned into a GPU constant is not)
            return 1.0
        if calculated is not sl.LIF.alpha_mem_calculated:
            return self.alpha_mem_calculated  # another constant of a subclass: read per call
        return self.alpha_mem if self.train_alphas else ops.Decay(self.tau_mem)

    def _alpha_syn(self):
        if self.train_alphas or self.tau_syn is None:
            return self.alpha_syn_calculated
        return ops.Decay(self.tau_syn)

    def forward(self, input_data: torch.Tensor) -> torch.Tensor:
        return self._exodus_forward(input_data)

    def _kernel_options(self) -> dict:
        """ops.membrane's options for this layer's spike_fn, reset_fn and surrogate, translated
        once (eagerly, so torch.compile reads a plain dict) and again after one of them changes."""
        options = self.__dict__.get("_exodus_options")
        if options is None:
            if self.spike_fn is None:
                options = {"spike": "none"}
            else:
                options = neuron_kwargs(self.spike_fn, self.reset_fn, self.surrogate_grad_fn)
            self.__dict__["_exodus_options"] = options
        return options

    def __setattr__(self, name, value) -> None:
        super().__setattr__(name, value)
        self.__dict__.pop("_exodus_call", None)  # any option or parameter may have changed
        if name in ("spike_fn", "reset_fn", "surrogate_grad_fn"):
            self.__dict__.pop("_exodus_options", None)

    @property
    def _param_dict(self) -> dict:
        param_dict = super()._param_dict
        param_dict.update(decay_early=self.decay_early)
        return param_dict

    def __repr__(self) -> str:
        return "EXODUS " + super().__repr__()


def _owned(state: torch.Tensor) -> torch.Tensor:
    # sinabs' reset_states detaches buffers in place, which views refuse. The C++ operator returns
    # states in the neuron shape (nothing to copy); the other paths return (B, N) results viewed
    # in it.
    return state if state._base is None else state.clone()


class LIF(ExodusNeuronMixin, sl.LIF):
    """Leaky Integrate and Fire neuron layer, the sinabs :class:`~sinabs.layers.LIF` on exodus
    kernels: same dynamics and outputs (bit-identical in float32), exact BPTT gradients in O(T).

    Args:
        tau_mem: Membrane potential time constant.
        tau_syn: Synaptic decay time constant; None (default) for no synaptic dynamics.
        spike_threshold: Spikes are emitted if v_mem is above that threshold. Default 1.0.
        spike_fn: MultiSpike, SingleSpike or MaxSpike(m).
        reset_fn: MembraneSubtract(subtract_value) or MembraneReset(reset_value).
        surrogate_grad_fn: any sinabs surrogate (evaluated in the kernels) or a callable
            f(v_mem, spike_threshold) (evaluated with PyTorch).
        min_v_mem: Lower bound for membrane potential v_mem, clipped at every time step.
        train_alphas: When True, the decay factor exp(-1/tau) is trained rather than tau.
        shape: Optionally initialise the layer state with given shape.
        norm_input: When True, normalise input current by (1 - alpha_mem).
        record_states: When True, record v_mem (and i_syn) of every step in `recordings`.
        decay_early: As in sinabs-exodus 2.0. True (default, as sinabs): the synaptic current
            decays in the step of its input, i_t = a (i_{t-1} + x_t); False: i_t = a i_{t-1} + x_t.

    Shape:
        Input: :math:`(Batch, Time, Channel, Height, Width)` or :math:`(Batch, Time, Channel)`
        Output: Same as input.

    Attributes:
        v_mem: The membrane potential after the last step.
        i_syn: The synaptic current after the last step (with tau_syn only).
    """

    def __init__(
        self,
        tau_mem: Union[float, torch.Tensor],
        tau_syn: Optional[Union[float, torch.Tensor]] = None,
        spike_threshold: torch.Tensor = torch.tensor(1.0),
        spike_fn: Callable = MultiSpike,
        reset_fn: Callable = MembraneSubtract(),
        surrogate_grad_fn: Callable = SingleExponential(),
        min_v_mem: Optional[float] = None,
        train_alphas: bool = False,
        shape: Optional[torch.Size] = None,
        norm_input: bool = True,
        record_states: bool = False,
        decay_early: bool = True,
    ):
        super().__init__(
            tau_mem=tau_mem, tau_syn=tau_syn, spike_threshold=spike_threshold, spike_fn=spike_fn,
            reset_fn=reset_fn, surrogate_grad_fn=surrogate_grad_fn, min_v_mem=min_v_mem,
            train_alphas=train_alphas, shape=shape, norm_input=norm_input, record_states=record_states,
        )
        self.decay_early = decay_early
        self._kernel_options()  # refuses unsupported options now, not at the first forward


class IAF(ExodusNeuronMixin, sl.IAF):
    """Integrate and Fire neuron layer, the sinabs :class:`~sinabs.layers.IAF` on exodus kernels.

    Args:
        spike_threshold: Spikes are emitted if v_mem is above that threshold. Default 1.0.
        spike_fn: MultiSpike, SingleSpike or MaxSpike(m).
        reset_fn: MembraneSubtract(subtract_value) or MembraneReset(reset_value).
        surrogate_grad_fn: any sinabs surrogate or a callable f(v_mem, spike_threshold).
        tau_syn: Synaptic decay time constant; None (default) for no synaptic dynamics.
        min_v_mem: Lower bound for membrane potential v_mem, clipped at every time step.
        shape: Optionally initialise the layer state with given shape.
        record_states: When True, record v_mem (and i_syn) of every step in `recordings`.
        decay_early: see :class:`LIF`.

    Shape:
        Input: :math:`(Batch, Time, Channel, Height, Width)` or :math:`(Batch, Time, Channel)`
        Output: Same as input.

    Attributes:
        v_mem: The membrane potential after the last step.
        i_syn: The synaptic current after the last step (with tau_syn only).
    """

    def __init__(
        self,
        spike_threshold: torch.Tensor = torch.tensor(1.0),
        spike_fn: Callable = MultiSpike,
        reset_fn: Callable = MembraneSubtract(),
        surrogate_grad_fn: Callable = SingleExponential(),
        tau_syn: Optional[float] = None,
        min_v_mem: Optional[float] = None,
        shape: Optional[torch.Size] = None,
        record_states: bool = False,
        decay_early: bool = True,
    ):
        super().__init__(
            spike_threshold=spike_threshold, spike_fn=spike_fn, reset_fn=reset_fn,
            surrogate_grad_fn=surrogate_grad_fn, tau_syn=tau_syn, min_v_mem=min_v_mem, shape=shape,
            record_states=record_states,
        )
        self.decay_early = decay_early
        self._kernel_options()  # refuses unsupported options now, not at the first forward


class ExpLeak(ExodusNeuronMixin, sl.ExpLeak):
    """Leaky integrator layer (no spikes), the sinabs :class:`~sinabs.layers.ExpLeak` on exodus
    kernels, min_v_mem included (which sinabs-exodus ignores).

    Args:
        tau_mem: Membrane potential time constant.
        shape: Optionally initialise the layer state with given shape.
        train_alphas: When True, the decay factor exp(-1/tau) is trained rather than tau.
        min_v_mem: Lower bound for membrane potential v_mem, clipped at every time step.
        norm_input: When True, normalise input current by (1 - alpha_mem).
        record_states: When True, record v_mem of every step in `recordings`.
        decay_early: As in sinabs-exodus 2.0. False (default, as sinabs); True: the input also
            decays in its own step, v_t = a v_{t-1} + a x_t.

    Shape:
        Input: :math:`(Batch, Time, Channel, Height, Width)` or :math:`(Batch, Time, Channel)`
        Output: Same as input.
    """

    def __init__(
        self,
        tau_mem: Union[float, torch.Tensor],
        shape: Optional[torch.Size] = None,
        train_alphas: bool = False,
        min_v_mem: Optional[float] = None,
        norm_input: bool = False,
        record_states: bool = False,
        decay_early: bool = False,
    ):
        super().__init__(
            tau_mem=tau_mem, shape=shape, train_alphas=train_alphas, min_v_mem=min_v_mem,
            norm_input=norm_input, record_states=record_states,
        )
        self.decay_early = decay_early
        self._kernel_options()  # refuses unsupported options now, not at the first forward


class _ExodusSqueeze(ExodusNeuronMixin):
    """The Squeeze variants: (Batch*Time, ...) input, unflattened around the exodus forward as
    sinabs' SqueezeMixin does; give `batch_size` or `num_timesteps`."""

    _decay_early_default = True

    def __init__(self, batch_size=None, num_timesteps=None, decay_early: Optional[bool] = None, **kwargs):
        super().__init__(batch_size=batch_size, num_timesteps=num_timesteps, **kwargs)
        self.decay_early = self._decay_early_default if decay_early is None else decay_early
        self._kernel_options()  # refuses unsupported options now, not at the first forward

    def forward(self, input_data: torch.Tensor) -> torch.Tensor:
        return self.squeeze_forward(input_data, self._exodus_forward)


class LIFSqueeze(_ExodusSqueeze, sl.LIFSqueeze):
    """:class:`LIF` taking squeezed input (Batch*Time, ...), as sinabs' LIFSqueeze; give
    `batch_size` or `num_timesteps`. Other arguments as :class:`LIF` (decay_early default True)."""


class IAFSqueeze(_ExodusSqueeze, sl.IAFSqueeze):
    """:class:`IAF` taking squeezed input (Batch*Time, ...), as sinabs' IAFSqueeze; give
    `batch_size` or `num_timesteps`. Other arguments as :class:`IAF` (decay_early default True)."""


class ExpLeakSqueeze(_ExodusSqueeze, sl.ExpLeakSqueeze):
    """:class:`ExpLeak` taking squeezed input (Batch*Time, ...), as sinabs' ExpLeakSqueeze; give
    `batch_size` or `num_timesteps`. Other arguments as :class:`ExpLeak` (decay_early default
    False)."""

    _decay_early_default = False
