"""bilateral.placement: what each run gets from what a cluster reports. The offers here are faked
only at the level of the numbers Ray, Slurm or torch report; tests/test_ray.py and
tests/test_slurm.py read them from the real clusters."""

import pytest
import torch

from bilateral.errors import ConfigError
from bilateral.execution import choose_precision, resolve_device
from bilateral.placement import Offer, place
from bilateral.training.scoring import evaluate
from bilateral.training.trainer import epoch_seed
from tests.conftest import tiny_config

GPU_NODE = Offer(gpus=8, cpus=64, source="the Ray cluster")
CPU_ONLY = Offer(gpus=0, cpus=2, source="this machine (torch.cuda)")


def test_a_cluster_with_gpus_gives_each_run_one():
    p = place("auto", None, None, 1, GPU_NODE, 1.0)
    assert (p.device, p.gpus, p.cpus, p.threads, p.memory_fraction) == ("cuda", 1.0, 1.0, 1, None)
    ddp = place("auto", None, 8, 4, GPU_NODE, 1.0)
    assert (ddp.gpus, ddp.gpus_per_worker, ddp.cpus_per_worker, ddp.threads) == (4.0, 1.0, 2.0, 2)
    packed = place("auto", 0.25, None, 1, GPU_NODE, 1.0)
    assert packed.device == "cuda" and packed.memory_fraction == 0.25  # each process's share of memory


def test_a_machine_without_gpus_trains_on_cpu_and_says_so():
    p = place("auto", None, None, 2, CPU_ONLY, 1.0)
    assert (p.device, p.gpus, p.workers) == ("cpu", 0.0, 2)
    assert p.note == "this machine (torch.cuda) reports no GPU: the runs train on the CPU"
    assert place("auto", 0, None, 1, GPU_NODE, 1.0).device == "cpu"  # asked for no GPU


@pytest.mark.parametrize(
    "device, gpus, workers, offer, message",
    [
        ("cuda", None, 1, CPU_ONLY, "--device cuda asks for a GPU, but this machine (torch.cuda)"),
        ("auto", 1, 1, CPU_ONLY, "--gpus-per-run 1 asks for a GPU"),
        ("cpu", 1, 1, GPU_NODE, "--device cpu with --gpus-per-run 1"),
        ("auto", 0.5, 2, GPU_NODE, "DDP needs one whole GPU per worker"),
        ("auto", 1, 2, GPU_NODE, "give --gpus-per-run 2"),
        ("auto", 2, 1, GPU_NODE, "add --workers-per-run 2"),
        ("auto", 16, 16, GPU_NODE, "more than the 8 GPU(s) the Ray cluster reports"),
        ("gpu", None, 1, GPU_NODE, "device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ],
)
def test_impossible_requests_are_clear_errors(device, gpus, workers, offer, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        place(device, gpus, None, workers, offer, 1.0)


def test_autoscaling_ray_cluster_with_no_gpu_node_up_yet(tmp_path):
    """An autoscaler's GPU node groups at zero: ray.cluster_resources() shows CPUs only. --device
    auto must not quietly train on them (and so never start a GPU node); GPUs asked for with
    --autoscale are asked of Ray, whose autoscaler then starts the nodes."""
    from launch.sweep import parse_args, resolve_config
    from ray_jobs.backend import ray_placement, trial_resources

    head_only = {"CPU": 8.0}

    def placement(*flags):
        args = parse_args(["--cluster", "ray", "--out", str(tmp_path), *flags])
        return ray_placement(args, resolve_config(args), head_only)

    with pytest.raises(ConfigError, match=r"--device auto would train every run on the CPU.*--device cpu"):
        placement()
    with pytest.raises(ConfigError, match=r"--gpus-per-run 1 asks for a GPU.*--gpus-per-run 1 --autoscale"):
        placement("--gpus-per-run", "1")
    for flags in (["--gpus-per-run", "1", "--autoscale"], ["--autoscale"]):
        p = placement(*flags)
        assert (p.device, p.gpus) == ("cuda", 1.0) and trial_resources(p) == {"CPU": 1.0, "GPU": 1.0}
    ddp = placement("--autoscale", "--workers-per-run", "4")
    assert trial_resources(ddp) == {"CPU": 1.0, "GPU": 1.0} and ddp.gpus == 4
    assert placement("--device", "cpu").device == "cpu"


def test_ray_ddp_runs_at_once_are_capped_by_gpus_too():
    """64 CPUs and 8 GPUs, DDP runs of 2 workers: 4 fit, not the 31 that counting CPUs gives."""
    from ray_jobs.backend import ddp_concurrency

    node = {"CPU": 64.0, "GPU": 8.0}
    assert ddp_concurrency(node, place("auto", None, None, 2, GPU_NODE, 1.0)) == 4
    assert ddp_concurrency(node, place("cpu", None, None, 2, GPU_NODE, 1.0)) == 31  # CPU-only DDP
    assert ddp_concurrency({"CPU": 8.0}, place("auto", None, None, 2, GPU_NODE, 1.0)) == 1  # none up yet


def test_a_slurm_partition_without_gpus_needs_device_cpu_said():
    """sinfo's default partition is CPU-only on many clusters: --device auto there is an error that
    names both ways out, not a whole sweep on CPUs with one warning line."""
    from slurm.backend import parse_sinfo

    offer = parse_sinfo("cpu*|(null)|64\ngpu|gpu:a100:4|64\n", None)
    with pytest.raises(
        ConfigError, match=r"--device cpu to train on CPUs, or name a GPU partition with --partition"
    ):
        place("auto", None, None, 1, offer, 2.0)
    assert place("cpu", None, None, 1, offer, 2.0).device == "cpu"
    assert place("auto", None, None, 1, parse_sinfo("cpu*|(null)|64\ngpu|gpu:a100:4|64\n", "gpu"), 2.0).on_gpu


@pytest.mark.parametrize("source", ["ray", "slurm"])
def test_a_fixed_gpu_index_is_refused_on_a_cluster(source):
    """Every Ray trial and Slurm job numbers its own GPUs from 0: cuda:1 would fail in every run."""
    from ray_jobs.backend import ray_offer
    from slurm.backend import parse_sinfo

    offer = ray_offer({"CPU": 64.0, "GPU": 8.0}) if source == "ray" else parse_sinfo("gpu*|gpu:8|64", None)
    with pytest.raises(ConfigError, match="--device cuda:1: every job or trial numbers"):
        place("cuda:1", None, None, 1, offer, 1.0)
    assert place("cuda", None, None, 1, offer, 1.0).device == "cuda"
    assert place("cuda:1", None, None, 1, GPU_NODE, 1.0).device == "cuda:1"  # this machine's GPU 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error for a machine without a GPU")
def test_cuda_without_a_gpu_fails_before_training():
    with pytest.raises(ConfigError, match=r"torch sees 0 CUDA device\(s\)"):
        resolve_device("cuda")


def test_bf16_only_where_the_device_has_it(monkeypatch):
    import bilateral.execution

    (spec,) = [s for s in _plan("train.bf16=true") if s.kind == "unilateral"]
    monkeypatch.setattr(bilateral.execution, "cpu_computes_bf16", lambda: True)
    assert choose_precision(spec, torch.device("cpu")) == ("bf16", "")
    monkeypatch.setattr(bilateral.execution, "cpu_computes_bf16", lambda: False)
    precision, why = choose_precision(spec, torch.device("cpu"))
    assert precision == "fp32" and "this CPU has no bf16 instructions (AVX512-BF16 or AMX)" in why
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Tesla V100-SXM2-16GB")
    precision, why = choose_precision(spec, torch.device("cuda", 0))
    assert precision == "fp32" and "Tesla V100-SXM2-16GB (compute capability 7.0) has no bf16" in why


def test_records_say_when_fp32_convolutions_run_in_tf32(monkeypatch):
    """PyTorch's default lets cuDNN run fp32 convolutions in TF32 on Ampere and newer: the paper and
    authors presets (bf16 off) would say fp32 while computing in TF32. The record says which."""
    from bilateral.execution import tf32_state

    assert tf32_state(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (9, 0))  # an H100
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(allow_tf32=True):
            assert tf32_state(torch.device("cuda", 0)) == {"conv": True, "matmul": False}
        with torch.backends.cudnn.flags(allow_tf32=False):
            assert tf32_state(torch.device("cuda", 0)) == {"conv": False, "matmul": False}
        torch.backends.cuda.matmul.allow_tf32 = True
        assert tf32_state(torch.device("cuda", 0))["matmul"] is True
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (7, 0))  # a V100
        assert tf32_state(torch.device("cuda", 0)) == {"conv": False, "matmul": False}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def test_dropout_seeds_differ_per_rank_and_repeat_per_epoch():
    seeds = {(rank, epoch): epoch_seed(7, rank, epoch) for rank in range(2) for epoch in range(3)}
    assert len(set(seeds.values())) == 6 and epoch_seed(7, 1, 2) == seeds[(1, 2)]


def test_evaluation_logits_are_fp32_even_for_a_bf16_run():
    """bf16 autocast rounds logits; evaluation must not, whatever train.bf16 says."""
    from bilateral.assemble import build_model
    from bilateral.data.memory_loader import DeviceLoader, LoaderOptions
    from bilateral.run_data import load_data, make_splits

    (spec,) = [s for s in _plan("train.bf16=true") if s.kind == "unilateral"]
    data = load_data(spec.data.source, tiny_config().data_dir, True)
    torch.manual_seed(0)
    model = build_model(spec, data.num_fine, data.num_coarse).eval()
    val = make_splits(data, spec).val
    loader = DeviceLoader(data.train, val, LoaderOptions(100, "cpu", *data.mean_std(), train=False, seed=0))
    _, logits = evaluate(model, loader, spec, torch.device("cpu"))
    with torch.no_grad():
        fp32 = torch.cat([model(x)["fine"] for x, _, _ in loader])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = torch.cat([model(x)["fine"].float() for x, _, _ in loader])
    assert logits["fine"].dtype == torch.float32 and torch.equal(logits["fine"], fp32)
    assert not torch.equal(bf16, fp32)  # what autocast evaluation would have stored


def _plan(*overrides):
    from bilateral.plan import build_plan

    return build_plan(tiny_config("plan.models=[unilateral]", *overrides)).runs
