import pytest

from edgepipe.config import SMOKE, RunConfig, build_config, load_yaml, parse_override
from edgepipe.errors import ConfigError


def test_defaults_are_the_documented_ones():
    cfg = build_config({})
    assert cfg.student.layers == [0, 2, 4]
    assert (cfg.distill.temperature, cfg.distill.alpha) == (2.0, 0.5)
    assert (cfg.data.val_size, cfg.data.test_size, cfg.data.max_length) == (1000, 2000, 64)
    assert cfg.bench.devices == ["x86"] and cfg.bench.threads == 1


def test_yaml_and_set_flags_map_onto_the_same_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ndistill:\n  temperature: 4\n  alpha: 0.7\nstudent:\n  layers: [0, 5]\n")
    from_file = build_config(load_yaml(f))
    from_flags = build_config(
        dict(
            parse_override(s) for s in ["seed=3", "distill.temperature=4", "distill.alpha=0.7", "student.layers=[0, 5]"]
        )
    )
    assert from_file == from_flags
    assert from_file.distill.temperature == 4.0 and from_file.student.layers == [0, 5]


def test_later_layers_win():
    cfg = build_config(SMOKE, {"distill.max_steps": 7})
    assert cfg.distill.max_steps == 7 and cfg.data.train_limit == SMOKE["data.train_limit"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"distill.temperature": 0}, "distill.temperature: Input should be greater than 0"),
        ({"distill.alpha": 1.5}, "distill.alpha: Input should be less than or equal to 1"),
        ({"distill.alpha": -0.1}, "distill.alpha: Input should be greater than or equal to 0"),
        ({"distill.epochs": "many"}, "distill.epochs: Input should be a valid number"),
        ({"distill.temprature": 2}, "unknown key 'distill.temprature'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"bench.devices": ["pdp11"]}, "unknown device 'pdp11'"),
        ({"bench.seq_len": 128}, "exceeds data.max_length"),
        ({"student.layers": []}, "student.layers"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        build_config(override)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_set_values_are_parsed_as_yaml_never_evaluated():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("x=__import__('os').system('true')") == ("x", "__import__('os').system('true')")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(listy)


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(ValueError, match="frozen"):
        cfg.seed = 5


def test_fleet_file_adds_devices_with_their_own_settings(tmp_path):
    from edgepipe.config import load_fleet

    f = tmp_path / "fleet.yaml"
    f.write_text(
        "devices:\n  - device: arm:pi@board-1\n    tags: {soc: bcm2712}\n    ssh: {python: /opt/py/bin/python3}\n  - android:R58M\n"
    )
    fleet = load_fleet(f)
    cfg = build_config({"bench.fleet": fleet})
    assert cfg.bench.devices == ["arm:pi@board-1", "android:R58M"]  # no explicit devices: only the fleet's
    assert build_config({"bench.fleet": fleet, "bench.devices": ["x86"]}).bench.devices == [
        "x86",
        "arm:pi@board-1",
        "android:R58M",
    ]
    assert cfg.bench.connection("arm:pi@board-1")[0].python == "/opt/py/bin/python3"
    assert cfg.bench.connection("android:R58M")[0].python == "python3"
    assert cfg.bench.tags("arm:pi@board-1") == {"soc": "bcm2712"} and cfg.bench.tags("android:R58M") == {}
    for text, message in (
        ("[]", "must be a non-empty list"),
        ("- device: arm:pi@x\n  tagz: {}", "unknown key"),
        ("- device: 'arm:pi@x;rm'", r"device 'arm:pi@x;rm': expected arm:USER@HOST"),
    ):
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            build_config({"bench.fleet": load_fleet(f)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_fleet(tmp_path / "nope.yaml")


def test_a_bad_fleet_device_is_named_where_it_is_written():
    """Regression: the fleet's device strings were parsed with a ValueError the code caught as ConfigError,
    so the error named the whole `bench` section ("--set bench=VALUE") instead of the devices."""
    with pytest.raises(ConfigError) as e:
        build_config({"bench.fleet": [{"device": "x86"}, {"device": "quantum"}]})
    assert "bench.devices: unknown device 'quantum'" in str(e.value) and "--set bench=" not in str(e.value)


def test_moved_keys_keep_working_with_a_note():
    notes: list[str] = []
    cfg = build_config({"bench.seq_len": 32}, notes=notes)
    assert cfg.export.seq_len == 32 and cfg.measurement().seq_len == 32
    assert notes == [
        "bench.seq_len is now export.seq_len (the sequence length the artifacts are built for); the old key still works"
    ]
    assert "seq_len" not in cfg.bench.model_dump() and build_config({"export.seq_len": 32}) == cfg


def test_the_int8_budget_takes_one_text_of_two_hundred_at_half_a_point():
    """Drops are differences of rates: (0.655 - 0.65) * 100 is 0.5000000000000004 in floating point."""
    from edgepipe.config import QuantizeConfig

    q = QuantizeConfig(max_accuracy_drop=0.5, min_agreement=0.97)
    assert (0.655 - 0.65) * 100 > 0.5 and q.within_budget((0.655 - 0.65) * 100, 0.97)
    assert not q.within_budget(0.51, 0.99) and not q.within_budget(0.0, 0.9699)


def test_the_tasks_defaults_fill_only_what_nobody_set():
    from edgepipe import tasks
    from edgepipe.config import config_to_dict, explicit_keys, flatten_tree, for_task

    cfg = build_config(SMOKE, {"prune.heads": 0.25}, {"quantize.max_accuracy_drop": 0.5})
    explicit = explicit_keys(cfg)
    assert {"student.layers", "prune.heads", "quantize.max_accuracy_drop", "data.train_limit"} <= explicit
    assert "prune.ffn" not in explicit and "prune.vocab" not in explicit
    # a config rebuilt from its full dump has every key set: the run takes `explicit` before that
    assert "prune.ffn" in explicit_keys(build_config(flatten_tree(config_to_dict(cfg))))
    embedding = tasks.get("embedding").config_defaults(teacher_layers=6)
    assert embedding["student.layers"] == [0, 1, 2, 3, 4, 5]
    got, chosen = for_task(cfg, embedding, explicit)
    assert chosen == {"prune.ffn": 0.0, "prune.hidden": 0.0, "prune.vocab": False, "quantize.max_excluded_groups": 0}
    assert got.student.layers == [0] and got.prune.heads == 0.25 and got.quantize.max_accuracy_drop == 0.5
    assert got.prune.ffn == 0.0 and got.prune.vocab is False
    plain, chosen = for_task(build_config(), embedding, explicit_keys(build_config()))
    assert plain.student.layers == [0, 1, 2, 3, 4, 5] and plain.quantize.max_accuracy_drop == 1.0
    for name in tasks.TASKS:
        if name != "embedding":
            assert tasks.get(name).config_defaults(teacher_layers=6) == {}, name
