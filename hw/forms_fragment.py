"""FORMS' fragment datapath: zero-skip detector, early ADC trigger, sign-indicator accumulator."""

from __future__ import annotations

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import FormsFragmentConfig

__all__ = ["FormsFragment", "fragment_job_layout"]


def fragment_job_layout(cfg: FormsFragmentConfig) -> data.StructLayout:
    """Payload of one fragment job.

    - ``inputs``: ``fragment_size`` unsigned inputs (they load the shift registers);
    - ``levels[row][column][slice]``: cell levels of the weight magnitudes (the crossbar's
      contents, carried here so the digital stand-in of the array can compute its sums);
    - ``negative``: one sign-indicator bit per column (1: subtract this fragment);
    - ``last``: the job closes a dot product (emit and clear the accumulators).
    """
    level = unsigned(cfg.cell_bits)
    return data.StructLayout({
        "inputs": data.ArrayLayout(unsigned(cfg.input_bits), cfg.fragment_size),
        "levels": data.ArrayLayout(
            data.ArrayLayout(data.ArrayLayout(level, cfg.slices), cfg.columns),
            cfg.fragment_size),
        "negative": unsigned(cfg.columns),
        "last": unsigned(1),
    })


def _signed_bits(bound: int) -> int:
    """Two's-complement width holding -bound..bound."""
    return bound.bit_length() + 1


class FormsFragment(wiring.Component):
    """One FORMS fragment of ``fragment_size`` rows and ``columns`` weight columns.

    Each ``i_stream`` beat is a fragment job (layout :func:`fragment_job_layout`). Its inputs
    load parallel-in/serial-out shift registers; every cycle the zero-skip detector NORs the
    bits still to shift in each register and ANDs the results across the fragment. While
    that AND is 0 the registers shift one bit (LSB first) onto the 1-bit DACs
    (``dac_valid``/``dac_bits``), the array's cell-column sums are digitized (an ideal
    ``adc_bits`` ADC; here the array is a digital stand-in: ``sum_i bit_i * level_i``,
    clipped) and shifted into the fragment's partial sums. When it is 1 the ADC result is
    final (early trigger, ``trigger``): the partial sums are added to or subtracted from the
    column accumulators as the sign indicator says, and a ``last`` job emits them on
    ``o_stream`` (one signed result per column) and clears them. Bit-exact with
    ``chipforge.sim.ref.forms_fragment.run_fragments``.

    Latency and throughput: a job occupies the datapath ``EIC + 1`` cycles, EIC being its
    effective input cycles (max over its inputs of width minus leading zeros): the accept
    cycle, then EIC shift cycles; the next job is accepted in the trigger cycle. A result is
    valid 1 cycle after its last job's trigger. ``i_stream.ready`` is low while shifting and
    while a result waits on a stalled ``o_stream``.
    """

    def __init__(self, cfg: FormsFragmentConfig):
        if not isinstance(cfg, FormsFragmentConfig):
            raise TypeError(f"cfg must be a FormsFragmentConfig, not {cfg!r}")
        self.cfg = cfg
        self.partial_width = cfg.fragment_max.bit_length()
        self.acc_width = _signed_bits(cfg.fragment_max * cfg.max_fragments)
        super().__init__({
            "i_stream": In(stream.Signature(fragment_job_layout(cfg))),
            "o_stream": Out(stream.Signature(
                data.ArrayLayout(signed(self.acc_width), cfg.columns))),
            "dac_valid": Out(1),
            "dac_bits": Out(cfg.fragment_size),
            "trigger": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        job = self.i_stream.payload
        rows, cols, slices = cfg.fragment_size, cfg.columns, cfg.slices

        busy = Signal()
        shift = [Signal(cfg.input_bits, name=f"shift{i}") for i in range(rows)]
        held = Signal(fragment_job_layout(cfg))     # the job being shifted
        levels, negative, last = held.levels, held.negative, held.last
        step = Signal(range(cfg.input_bits + 1))
        partial = [Signal(self.partial_width, name=f"partial{c}") for c in range(cols)]
        acc = [Signal(signed(self.acc_width), name=f"acc{c}") for c in range(cols)]

        # Zero-skip detector: NOR of the bits still to shift, per register; AND across rows.
        all_zero = Signal()
        m.d.comb += all_zero.eq(Cat(*(s == 0 for s in shift)).all())
        shifting = Signal()
        m.d.comb += shifting.eq(busy & ~all_zero)
        finishing = Signal()      # the early trigger: busy and nothing left to shift
        m.d.comb += finishing.eq(busy & all_zero)

        # The array's sums for this cycle's bits, one ideal clipped ADC code per cell column.
        bits = Signal(rows)
        m.d.comb += bits.eq(Cat(*(s[0] for s in shift)))
        code_width = cfg.adc_bits
        sum_width = (rows * ((1 << cfg.cell_bits) - 1)).bit_length()
        column_add = []
        for c in range(cols):
            terms = []
            for s in range(slices):
                total = Signal(sum_width, name=f"sum{c}_{s}")
                m.d.comb += total.eq(sum(
                    levels[i][c][s] & bits[i].replicate(cfg.cell_bits)
                    for i in range(rows)))
                code = Signal(code_width, name=f"code{c}_{s}")
                if rows * ((1 << cfg.cell_bits) - 1) > cfg.adc_max_code:   # the ADC can clip
                    with m.If(total > cfg.adc_max_code):
                        m.d.comb += code.eq(cfg.adc_max_code)
                    with m.Else():
                        m.d.comb += code.eq(total)
                else:
                    m.d.comb += code.eq(total)
                terms.append(code << (cfg.cell_bits * s))
            weighted = Signal(self.partial_width, name=f"cycle_value{c}")
            m.d.comb += weighted.eq(sum(terms))
            column_add.append(weighted)

        m.d.comb += [
            self.dac_valid.eq(shifting),
            self.dac_bits.eq(bits & shifting.replicate(rows)),
            self.trigger.eq(0),
        ]

        o_blocked = Signal()
        m.d.comb += o_blocked.eq(self.o_stream.valid & ~self.o_stream.ready)
        can_finish = Signal()
        m.d.comb += can_finish.eq(~last | ~o_blocked)
        m.d.comb += self.i_stream.ready.eq(~busy | (finishing & can_finish))

        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        with m.If(shifting):
            for i in range(rows):
                m.d.sync += shift[i].eq(shift[i] >> 1)
            for c in range(cols):
                m.d.sync += partial[c].eq(partial[c] + (column_add[c] << step))
            m.d.sync += step.eq(step + 1)

        with m.If(finishing & can_finish):
            m.d.comb += self.trigger.eq(1)
            m.d.sync += busy.eq(0)
            for c in range(cols):
                signed_partial = Signal(signed(self.acc_width), name=f"signed_partial{c}")
                with m.If(negative[c]):
                    m.d.comb += signed_partial.eq(-partial[c])
                with m.Else():
                    m.d.comb += signed_partial.eq(partial[c])
                with m.If(last):
                    m.d.sync += [self.o_stream.payload[c].eq(acc[c] + signed_partial),
                                 acc[c].eq(0)]
                with m.Else():
                    m.d.sync += acc[c].eq(acc[c] + signed_partial)
            with m.If(last):
                m.d.sync += self.o_stream.valid.eq(1)

        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [busy.eq(1), held.eq(job), step.eq(0)]
            m.d.sync += [shift[i].eq(job.inputs[i]) for i in range(rows)]
            m.d.sync += [partial[c].eq(0) for c in range(cols)]
        return m
