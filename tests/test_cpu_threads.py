"""Thread counts that do not oversubscribe the cores (makd.data.cpu_threads): the cgroup quota and affinity, the
measured choice, the epoch-rate watch, and the trainer that uses them (issue 21, item 4)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from makd.data import cpu_threads
from makd.data.cpu_threads import RateWatch, ThreadChoice


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_cgroup_v2_quota_in_cores(tmp_path):
    write(tmp_path / "proc_cgroup", "0::/job/step\n")
    write(tmp_path / "fs" / "cpu.max", "max 100000\n")  # the root: no limit
    write(tmp_path / "fs" / "job" / "step" / "cpu.max", "150000 100000\n")
    assert cpu_threads.cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") == 1.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cpu_threads.cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") == 2.0
    write(tmp_path / "fs" / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert cpu_threads.cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") is None
    assert cpu_threads.cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "no_proc_file") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: None)
    assert cpu_threads.usable_cpus() == affinity
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 0.5)
    assert cpu_threads.usable_cpus() == 1
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 1.5)
    assert cpu_threads.usable_cpus() == min(affinity, 2)
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 1000.0)
    assert cpu_threads.usable_cpus() == affinity


def test_candidates_and_the_fewest_threads_within_ten_percent_of_the_fastest():
    assert cpu_threads.candidate_counts(1) == [1]
    assert cpu_threads.candidate_counts(2) == [1, 2]
    assert cpu_threads.candidate_counts(6) == [1, 2, 4, 6]
    assert cpu_threads.candidate_counts(16) == [1, 2, 4, 8, 16]
    assert cpu_threads.fewest_good_threads({1: 67.0, 2: 31.0}) == 1  # a busy machine (measured here)
    assert cpu_threads.fewest_good_threads({1: 100.0, 2: 105.0}) == 1  # 5 % is not worth a second thread
    assert cpu_threads.fewest_good_threads({1: 100.0, 2: 180.0, 4: 190.0}) == 2
    assert cpu_threads.fewest_good_threads({1: 100.0, 2: 180.0, 4: 330.0, 8: 350.0}) == 4


def test_an_explicit_count_or_the_environment_is_used_as_given(monkeypatch):
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpu_threads, "measure_thread_rates", lambda counts: pytest.fail("nothing to measure"))
    choice = cpu_threads.choose_threads(1)
    assert (choice.threads, choice.source, choice.warning) == (1, "config", "")
    too_many = cpu_threads.choose_threads(8)
    assert too_many.threads == 8 and "8 threads on 2 usable cores" in too_many.warning
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (cpu_threads.choose_threads(0).threads, cpu_threads.choose_threads(0).source) == (3, "environment")
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 1)
    assert (cpu_threads.choose_threads(0).threads, cpu_threads.choose_threads(0).source) == (1, "one core")


def test_cuda_takes_the_cores_left_by_the_workers_without_measuring(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 16)
    monkeypatch.setattr(cpu_threads, "measure_thread_rates", lambda counts: pytest.fail("no probe on a GPU run"))
    choice = cpu_threads.choose_threads(0, "cuda", reserved=8)
    assert (choice.threads, choice.cores, choice.source) == (8, 16, "cuda")
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    cpu = cpu_threads.choose_threads(0, "cpu", reserved=1)  # 2 cores, 1 worker: nothing to measure
    assert cpu.line("NUM_THREADS") == "1 torch thread on 2 usable cores (the other core for the DataLoader worker)"


def test_the_cpu_choice_is_measured_over_the_cores_the_workers_leave(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 8)
    asked = []

    def rates(counts):
        asked.append(counts)
        return {1: 50.0, 2: 95.0, 4: 99.0}

    monkeypatch.setattr(cpu_threads, "measure_thread_rates", rates)
    choice = cpu_threads.choose_threads(0, "cpu", reserved=4)
    assert asked == [[1, 2, 4]]
    assert (choice.threads, choice.source) == (2, "measured")
    assert "2 torch threads on 8 usable cores" in choice.line("NUM_THREADS")
    assert "1: 50, 2: 95, 4: 99" in choice.line("NUM_THREADS")


def test_the_probe_measures_every_count_and_leaves_the_thread_count_as_it_was():
    torch.set_num_threads(1)
    rates = cpu_threads.measure_thread_rates([1, 2], rounds=1)
    assert sorted(rates) == [1, 2] and all(rate > 0 for rate in rates.values())
    assert torch.get_num_threads() == 1


def test_the_rate_watch_warns_once_with_the_fix_for_a_given_count():
    watch = RateWatch(ThreadChoice(2, 2, "config"))
    assert watch.observe(1, 120.0) == ""  # the first epoch sets the reference
    assert watch.observe(2, 250.0) == ""
    assert watch.observe(3, 90.0) == ""  # 0.36 of the best: slower, not collapsed
    line = watch.observe(4, 30.0)
    assert "epoch 4 ran at 30 img/s, 8.3x below the best epoch's 250" in line
    assert "NUM_THREADS 1 --resume" in line
    assert watch.observe(5, 20.0) == ""  # said once
    assert RateWatch(ThreadChoice(1, 2, "config")).observe(2, 1.0) == ""  # one thread: nothing to fix
    environment = RateWatch(ThreadChoice(2, 2, "environment"))
    environment.observe(1, 250.0)
    assert "OMP_NUM_THREADS=1" in environment.observe(2, 30.0)


def test_a_run_that_chose_its_count_measures_again_and_switches(monkeypatch):
    monkeypatch.setattr(cpu_threads, "measure_thread_rates", lambda counts: {1: 120.0, 2: 15.0})
    watch = RateWatch(ThreadChoice(2, 2, "measured", {1: 60.0, 2: 110.0}))
    try:
        watch.observe(1, 300.0)
        line = watch.observe(2, 40.0)
        assert "measured again: now 1 torch thread on 2 usable cores" in line
        assert watch.choice.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_the_trainer_uses_the_measured_count_and_records_it(release_dataset, monkeypatch, capsys):
    from makd.commands.train import train_main

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpu_threads, "measure_thread_rates", lambda counts: {1: 67.0, 2: 31.0})
    config, run = release_dataset["config"], release_dataset["root"] / "run"
    common = [str(config), "OUTPUT_DIR", str(run), "SOLVER.EPOCHS", "2", "DATASET.NUM_WORKERS", "0",
              "DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0"]
    assert train_main([*common, "--stop-after-epoch", "1"]) == 0
    out = capsys.readouterr().out
    assert "[makd] threads: 1 torch thread on 2 usable cores (measured at start" in out
    # NUM_THREADS may change on --resume (a run slowed by a busy machine continues with fewer threads); 2 threads
    # are not tried here: on a busy test machine they are what makes a run crawl.
    assert train_main([*common, "NUM_THREADS", "1", "--resume"]) == 0
    assert "[makd] threads: 1 torch thread on 2 usable cores (NUM_THREADS 1)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["num_threads"] for row in rows] == [1, 1]
