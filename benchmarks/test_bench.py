"""A tiny-size smoke run of the benchmark code: both variants, the table and the ratios."""

import json

from benchmarks.run import main


def test_bench_runs_both_variants_on_a_tiny_model(tmp_path, capsys):
    assert main(["--arch", "tiny", "--size", "64", "--runs", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench-tiny-cpu-64.json").read_text())
    ours, base = report["results"]["icdedit"], report["results"]["baseline"]
    assert ours["unet_evals"] == base["unet_evals"] == 8
    assert sorted(set(ours["rows_per_eval"])) == [1, 2] and sorted(set(base["rows_per_eval"])) == [2, 4]
    assert ours["adapter_strategy"] == "hybrid" and ours["memory_kind"] == "process_peak_rss"
    stages = ("text", "vae_encode", "forward", "reverse", "vae_decode")
    for result in (ours, base):
        medians = {stage: result["summary"][stage]["median"] for stage in (*stages, "total")}
        assert all(seconds > 0 for seconds in medians.values())
        assert sum(medians[s] for s in stages) <= medians["total"] * 1.01  # the stages are parts of the total
    # the ratios are the ones the report's numbers give, and the printed line says them
    assert report["speedup_total"] == base["summary"]["total"]["median"] / ours["summary"]["total"]["median"]
    assert report["memory_ratio"] == ours["peak_memory_mb"] / base["peak_memory_mb"]
    assert f"icdedit vs baseline: {report['speedup_total']:.2f}x faster" in capsys.readouterr().out
    table = (tmp_path / "bench-tiny-cpu-64.md").read_text().splitlines()
    assert table[0].startswith("| variant |") and any(line.startswith("| icdedit") for line in table)
    assert any(line.startswith("| baseline") for line in table)


def test_bench_runs_the_sdxl_architecture_against_the_official_sdxl_way(tmp_path):
    assert main(["--arch", "tiny-xl", "--size", "64", "--runs", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench-tiny-xl-cpu-64.json").read_text())
    ours, base = report["results"]["icdedit"], report["results"]["baseline"]
    # SDXL decodes the target row alone, in both
    assert ours["unet_evals"] == base["unet_evals"] == 8 and set(ours["rows_per_eval"]) == set(
        base["rows_per_eval"]
    ) == {1}
    assert report["speedup_total"] == base["summary"]["total"]["median"] / ours["summary"]["total"]["median"]


def test_adapter_strategy_bench_reports_each_strategy(capsys, monkeypatch):
    import sys

    from benchmarks import adapters

    for strategy, swapped in (("low-rank", None), ("hybrid", int), ("weight-swap", None)):
        monkeypatch.setattr(
            sys, "argv", ["adapters", "--arch", "tiny", "--size", "64", "--runs", "1", "--strategy", strategy]
        )
        adapters.main()
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["strategy"] == strategy and len(report["invert_seconds"]) == 1
        assert (report["swapped_layers"] is None) if swapped is None else report["swapped_layers"] > 0
