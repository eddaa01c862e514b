"""Device plumbing that needs no device: device strings, remote command lines, output parsing.

The benchmark_model texts below are recorded output of LiteRT's real tool (older builds
print only avg/std; newer ones add p5/median/p95 and an `INFO:` prefix). No
benchmark_model binary exists for this machine, so these recordings are what its parser
is tested on; everything else in devices/ is tested against real servers
(test_device_runners.py: a real sshd whose commands run under qemu-aarch64, the real adb server
talking to a loopback adbd; test_arm_rig.py and test_adbd.py test those rigs themselves).
"""

import shlex

import pytest

from edgepipe.config import build_config
from edgepipe.device_spec import parse_device
from edgepipe.devices import benchmark_model
from edgepipe.devices.remote import CommandResult, parse_runner_output, runner_command
from edgepipe.errors import ConfigError, DeviceError

OLD_FORMAT = """STARTING!
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
"""

NEW_FORMAT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/edgepipe/run-1/pruned.int8.tflite]
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 206 out of 214 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 5 partitions for subgraph 0.
INFO: The input model file size (MB): 8.81867
INFO: Initialized session in 41.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=1462 curr=1398 min=1350 max=6861 avg=1437.2 std=260 p5=1362 median=1391 p95=1702

INFO: Inference timings in us: Init: 41515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 1437.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.25
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x86", dict(kind="x86")),
        ("arm:pi@board.local", dict(kind="arm", user="pi", host="board.local", port=None)),
        ("arm:root@127.0.0.1:2222", dict(kind="arm", user="root", host="127.0.0.1", port=2222)),
        ("arm:ubuntu@[::1]:22", dict(kind="arm", user="ubuntu", host="::1", port=22)),
        ("android", dict(kind="android", serial=None)),
        ("android:127.0.0.1:6123", dict(kind="android", serial="127.0.0.1:6123")),
        ("android:R58M12ABCDE", dict(kind="android", serial="R58M12ABCDE")),
    ],
)
def test_device_strings(text, expected):
    spec = parse_device(text)
    assert {k: getattr(spec, k) for k in expected} == expected
    assert parse_device(spec.text) == spec
    assert "/" not in spec.slug and " " not in spec.slug


@pytest.mark.parametrize(
    "text, needle",
    [
        ("arm:board", "expected arm:USER@HOST"),
        ("arm:pi@board; rm -rf ~", "expected arm:USER@HOST"),
        ("arm:pi@board:99999", "outside 1-65535"),
        ("android:$(reboot)", "serial may hold"),
        ("ios:phone", "unknown device"),
    ],
)
def test_bad_device_strings_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        build_config({"bench.devices": ["x86", text]})


def test_duplicate_devices_and_bad_core_lists_are_refused():
    with pytest.raises(ConfigError, match="listed twice"):
        build_config({"bench.devices": ["x86", "x86"]})
    with pytest.raises(ConfigError, match="pin_cores"):
        build_config({"bench.pin_cores": "0; reboot"})


def test_nested_device_settings_from_yaml_and_flags_merge():
    cfg = build_config(
        {"bench.ssh": {"python": "/opt/py/bin/python3", "connect_timeout_s": 3}}, {"bench.ssh.connect_timeout_s": 5}
    )
    assert cfg.bench.ssh.python == "/opt/py/bin/python3" and cfg.bench.ssh.connect_timeout_s == 5


HOSTILE = [
    "a b.onnx",
    "x'; touch pwned; echo '.onnx",
    "$(touch pwned).onnx",
    "`id`.onnx",
    "new\nline.onnx",
    'quo"te.onnx',
]


@pytest.mark.parametrize("name", HOSTILE)
def test_runner_command_keeps_hostile_names_as_single_arguments(name):
    measurement = build_config({"bench.max_eval": 50, "bench.pin_cores": "0-1"}).measurement()
    line = runner_command(
        "python3", "/tmp/edgepipe.ab cd", f"/tmp/edgepipe.ab cd/{name}", "/tmp/edgepipe.ab cd/inputs0", measurement
    )
    argv = shlex.split(line)
    assert argv[:3] == ["taskset", "-c", "0-1"]
    assert argv[argv.index("--model") + 1] == f"/tmp/edgepipe.ab cd/{name}"
    assert argv[argv.index("--max-eval") + 1] == "50"


def test_runner_errors_become_one_device_line():
    with pytest.raises(DeviceError, match="onnxruntime is not installed on this device"):
        parse_runner_output(
            "arm:pi@b",
            "m.onnx",
            CommandResult(2, "", "runner: onnxruntime is not installed on this device; install it"),
        )
    with pytest.raises(DeviceError, match="connection lost .* finished results are kept"):
        parse_runner_output("arm:pi@b", "m.onnx", CommandResult(None, "", ""))
    with pytest.raises(DeviceError, match="is python3 installed"):
        parse_runner_output("arm:pi@b", "m.onnx", CommandResult(127, "", "sh: 1: python3: not found"))
    with pytest.raises(DeviceError, match="not JSON"):
        parse_runner_output("arm:pi@b", "m.onnx", CommandResult(0, '{"latency_ms": {"p5', ""))
    assert parse_runner_output("x", "m", CommandResult(0, 'noise\n{"accuracy": 0.5}\n', ""))["accuracy"] == 0.5


def test_benchmark_model_output_old_format():
    r = benchmark_model.parse_output(OLD_FORMAT)
    lat = r["latency_ms"]
    assert lat["n"] == 50 and lat["mean"] == pytest.approx(2950.34) and lat["std"] == pytest.approx(109.798)
    assert lat["min"] == pytest.approx(2727.568) and lat["max"] == pytest.approx(3189.954)
    assert lat["p50"] is None and lat["p90"] is None and lat["p99"] is None  # not printed: not guessed
    assert r["init_ms"] == pytest.approx(17.187) and r["first_inference_ms"] == pytest.approx(3512.391)
    assert r["memory_footprint_mb"] == {"init": 4.21094, "overall": 46.0859}
    assert r["delegate"] == "none reported"


def test_benchmark_model_output_new_format_takes_the_timed_runs_not_the_warmup():
    r = benchmark_model.parse_output(NEW_FORMAT)
    lat = r["latency_ms"]
    assert lat["n"] == 1000 and lat["p50"] == pytest.approx(1.391) and lat["mean"] == pytest.approx(1.4372)
    assert r["warmup_avg_ms"] == pytest.approx(58.1474) and r["peak_rss_mb"] == 61.25
    assert r["delegate"] == "TfLiteXNNPackDelegate (206/214 nodes)"


def test_benchmark_model_failure_names_its_error():
    text = "INFO: STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Failed to load model\n"
    with pytest.raises(ValueError, match="Failed to load model"):
        benchmark_model.parse_output(text)


def test_benchmark_model_flags_escape_colons_and_keep_paths_whole():
    bench = build_config({"bench.threads": 2}).measurement()
    layout = [{"name": "serving_default_input_ids:0", "shape": [1, 64]}, {"name": "mask", "shape": [1, 64]}]
    argv = benchmark_model.flags(
        "/w/benchmark_model", "/w/a b.tflite", layout, ["/w/ids.bin", "/w/mask.bin"], bench, 100, 10
    )
    assert "--graph=/w/a b.tflite" in argv and "--num_threads=2" in argv
    assert "--input_layer_shape=1,64:1,64" in argv
    assert "--input_layer_value_files=serving_default_input_ids::0:/w/ids.bin,mask:/w/mask.bin" in argv
    assert shlex.split(shlex.join(argv)) == argv
    assert not [a for a in argv if a.startswith("--signature_to_run_for")]  # older binaries lack the flag
    # a model with length signatures: benchmark_model must be told which one
    signed = [d | {"signature": "seq_16"} for d in layout]
    argv = benchmark_model.flags("/w/benchmark_model", "/w/m.tflite", signed, ["/w/i", "/w/m"], bench, 100, 10)
    assert "--signature_to_run_for=seq_16" in argv
