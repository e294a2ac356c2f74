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


def test_simulate_costs_the_inputs_its_ideal_run_recorded(monkeypatch):
    """``simulate`` takes the cost model's layer inputs from its ideal run (no second exact
    pass): the cost equals the cycle model's own pass on the same first samples."""
    import chipforge
    import chipforge.sim.cycle.report as cycle_report

    graph = load("lenet-digits-forms8")
    spec = get_accelerator_spec("forms8", options={"variation": 0.1})
    x, y = spec.family.load_data("digits", graph)
    x, y = x[:24], y[:24]

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the cost model ran its own exact pass")

    with monkeypatch.context() as patch:
        patch.setattr(cycle_report, "capture_workloads", no_second_pass)
        result = chipforge.simulate(graph, accelerator="forms8", data=(x, y), variation=0.1,
                                    cycle_samples=10, progress=False)
    sim = simulate_graph(spec, graph, x, y)
    own_pass = spec.family.cost(graph, sim.mapped, spec.config, x[:10]).to_dict()
    other_samples = spec.family.cost(graph, sim.mapped, spec.config, x[10:20]).to_dict()
    # FORMS skips zero input bits: the cost depends on which samples it sees
    assert other_samples["cycles"] != own_pass["cycles"]
    assert result.cost == own_pass
    assert result.accuracy_ideal == sim.result.accuracy_ideal
