import dataclasses

import pytest

from chipforge.config import ISAAC_CROSSBAR, CrossbarConfig, WeightEncoding, load_toml


@pytest.mark.parametrize("field,value", [
    ("adc_bits", 0), ("rows", -1), ("cols", 0), ("cell_bits", 9), ("weight_bits", 2.5),
    ("dac_bits", True), ("adc_rate", 0.0), ("adc_rate", float("nan")),
    ("weight_encoding", "offset"),
])
def test_bad_value_names_field_and_value(field, value):
    with pytest.raises(ValueError) as info:
        CrossbarConfig(**{field: value})
    message = str(info.value)
    assert field in message and repr(value) in message


def test_flip_needs_offset_encoding():
    with pytest.raises(ValueError, match="flip_encoding"):
        CrossbarConfig(flip_encoding=True, weight_encoding=WeightEncoding.TWO_COLUMN)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ISAAC_CROSSBAR.rows = 64


def test_isaac_preset_matches_table_i():
    cfg = ISAAC_CROSSBAR
    assert (cfg.rows, cfg.cols, cfg.cell_bits, cfg.adc_bits) == (128, 128, 2, 8)
    assert cfg.slices == 8 and cfg.input_cycles == 16
    # ISAAC §4.4: 1-bit DAC, 2-bit cells, 128 rows need 9 ADC bits, flip encoding saves one.
    assert cfg.rows * (2**cfg.cell_bits - 1) >= 2**cfg.adc_bits
    assert cfg.flip_encoding


def test_input_slices_put_sign_cycle_first():
    assert CrossbarConfig(input_bits=8, dac_bits=2).input_slice_widths == (1, 1, 2, 2, 2)
    assert CrossbarConfig(input_bits=8, dac_bits=4, signed_inputs=False).input_slice_widths \
        == (4, 4)


def test_dict_and_toml_round_trip(tmp_path):
    cfg = CrossbarConfig(rows=64, weight_encoding=WeightEncoding.TWO_COLUMN, adc_bits=6)
    assert CrossbarConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "arch.toml"
    path.write_text('[crossbar]\nrows = 64\nadc_bits = 6\nweight_encoding = "two_column"\n')
    assert load_toml(CrossbarConfig, path, "crossbar") == cfg


def test_toml_errors_name_the_problem(tmp_path):
    path = tmp_path / "arch.toml"
    path.write_text("rows = 64\nadc_bitz = 6\n")
    with pytest.raises(ValueError, match="adc_bitz"):
        load_toml(CrossbarConfig, path)
    path.write_text('weight_encoding = "diagonal"\n')
    with pytest.raises(ValueError, match="'offset', 'two_column'"):
        load_toml(CrossbarConfig, path)
    path.write_text("rows = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_toml(CrossbarConfig, path)
