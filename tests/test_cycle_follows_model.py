"""The cycle model costs the model the functional simulation runs (issue 16): an 8-bit
model on the 16-bit ISAAC preset is 8-bit weights in 4 cells fed 8 input cycles."""
from chipforge.families import get_accelerator_spec
from chipforge.families.reram import cycle_architecture
from chipforge.simulate import simulate_graph
from chipforge.zoo import load


def test_isaac_cycle_model_counts_the_adc_reads_the_simulation_makes():
    graph = load("lenet-digits")
    spec = get_accelerator_spec("isaac")
    x, y = spec.family.load_data("digits", graph)
    x, y = x[:8], y[:8]
    sim = simulate_graph(spec, graph, x, y)
    report = spec.family.cost(graph, sim.mapped, spec.config, x).native
    assert report.arch.weight_bits == 8 and report.arch.input_bits == 8
    assert report.arch.cells_per_weight == 4
    # Two independent counts: the functional run counts every ADC read it simulates; the
    # cycle model counts conversions from its own input cycles x physical columns.
    conversions = sum(la.actions["adc"] for la in report.layers)
    assert conversions == sim.result.metrics["adc_reads_per_sample"] > 0
    # ISAAC has no zero-skipping: every row group takes the model's 8 input cycles.
    assert all(la.full_cycles_per_vector == 8 + report.arch.group_overhead_cycles
               for la in report.layers)


def test_float_or_16bit_configs_keep_the_preset_widths():
    spec = get_accelerator_spec("isaac")
    assert cycle_architecture(spec.config).weight_bits == 16
    assert cycle_architecture(spec.config).input_bits == 16
    float_graph = load("lenet-digits")
    for node in float_graph.weighted_nodes():
        node.attrs.pop("weight_bits", None)
    assert cycle_architecture(spec.config, float_graph).weight_bits == 16


def test_narrower_inputs_keep_the_pipelines_other_stages():
    spec = get_accelerator_spec("isaac")
    arch = cycle_architecture(spec.config, load("lenet-digits"))
    preset = cycle_architecture(spec.config)
    assert arch.input_bits == 8 and preset.input_bits == 16
    assert arch.pipeline_stages - arch.input_bits == preset.pipeline_stages - preset.input_bits
