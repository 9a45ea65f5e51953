"""What the verbs print: the mixture table (`ift mix`), a submission (`ift submit`), an evaluation's
scores (`ift eval`, `--harness`) and a comparison's findings (`ift compare`). Plain text on
stdout; the logs go to stderr (ift.logs)."""

from __future__ import annotations


def print_mixture(rows: list[dict], tasks: list, planned: int, world_size: int, realized: bool) -> None:
    width = max(12, *(len(r["task"]) for r in rows))
    header = f"  {'realized':>8}" if realized else ""
    print(
        f"{'task':<{width}}  {'schema':<17} {'examples':>8} {'skipped':>7} {'cap':>6} {'rate':>7} "
        f"{'epochs':>7}{header}"
    )
    for r in rows:
        cap = "-" if r["cap"] is None else str(r["cap"])
        real = f"  {r['realized']:>8.4f}" if realized else ""
        print(
            f"{r['task']:<{width}}  {r['schema']:<17} {r['examples']:>8} {r['skipped']:>7} {cap:>6} "
            f"{r['rate']:>7.4f} {r['epochs']:>7.2f}{real}"
        )
    examples, skipped = sum(r["examples"] for r in rows), sum(r["skipped"] for r in rows)
    print(f"{len(rows)} tasks, {examples + skipped} records: {examples} examples, {skipped} bad records skipped")
    for t in tasks:
        for reason, n in t.skipped.items():
            print(f"  skipped in {t.name}: {n} x {reason}")
    print(
        f"epochs: over train.max_steps x global batch = {planned} sequences at world size {world_size} "
        "(one example per sequence; packing fits several)"
    )


def job_shape(s) -> str:
    """A job's shape from its `slurm:` section."""
    ranks = s.nodes * s.gpus_per_node
    return f"{s.nodes} node(s) x {s.gpus_per_node} task(s) = {ranks} rank(s)" + ("" if s.gres else ", no GPU gres")


def print_dry_run(script: str, note: str | None, planned: list, folder: str) -> None:
    """`ift submit --dry-run`: the sbatch script, then what would run where, as comments."""
    print(script.rstrip("\n"))
    if note:
        print(f"# {note}")
    print(
        f"# dry run: nothing submitted; {len(planned)} job(s), {job_shape(planned[0][0].slurm)}; "
        f"submitit folder {folder}"
    )
    for i, (cfg, point) in enumerate(planned):
        what = f"array task {i}: {' '.join(point)}: " if len(planned) > 1 else ""
        print(f"# {what}run dir {cfg.run_dir}")


def print_prepared(done: dict, tokenizer_dir: str, config: str) -> None:
    print(
        f"prepared {done['examples']:,} examples ({done['tokens']:,} tokens) of {done['tasks']} task(s) "
        f"in {done['seconds']:.1f} s"
    )
    print(f"cache: {done['cache_dir']} ({done['cache_bytes'] / 2**20:,.1f} MiB); tokenizer: {tokenizer_dir}")
    print(f"`ift train {config}` (same data settings and data.cache_dir) now starts from this cache")


def print_submitted(jobs: list, cfgs: list) -> None:
    s = cfgs[0].slurm
    shape = job_shape(s)
    for job, cfg in zip(jobs, cfgs):
        print(f"submitted job {job.job_id}: {cfg.run.name} ({shape})")
        print(f"  run dir: {cfg.run_dir}")
        print(f"  logs:    {job.paths.stdout} and {job.paths.stderr} (rank 0; rank r: _r_ in the name)")
    print(
        f"watch: squeue -j {str(jobs[0].job_id).split('_')[0]}; time limit {s.time_min} min, USR2 "
        f"{s.signal_delay_s}s before it -> checkpoint + requeue (up to {s.max_requeues} time-outs); "
        f"a crash requeues up to {s.max_failures} time(s)"
    )


def print_harness(result: dict) -> None:
    if not result.get("files"):
        return
    for task, scores in result["tasks"].items():
        print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    print(f"wrote {result['files']['json']}" + (" (logged to W&B)" if result.get("wandb") else ""))


def print_eval(result: dict) -> None:
    width = max(12, *(len(t) for t in result["tasks"]))
    print(f"{'task':<{width}}  {'n':>5}  {'EM':>6}  {'ROUGE-L':>7}  {'EM(cased)':>9}")
    for t, s in result["tasks"].items():
        print(
            f"{t:<{width}}  {s['n']:>5}  {s['exact_match']:>6.1f}  {s['rougeL']:>7.1f}  {s['exact_match_cased']:>9.1f}"
        )
    m = result["mean"]
    print(
        f"{'mean':<{width}}  {m['n']:>5}  {m['exact_match']:>6.1f}  {m['rougeL']:>7.1f}  "
        f"{m['exact_match_cased']:>9.1f}  ({m['tasks']} tasks)"
    )
    sp = result["speed"]
    print(
        f"{sp['examples_per_s']:.2f} examples/s, {sp['tokens_per_s']:.1f} generated tokens/s "
        f"({sp['processes']} process(es), {sp['backend']}); prompt padding {100 * sp['padding_frac']:.1f}%, "
        f"decode steps past a row's end {100 * sp['decode_waste']:.1f}%"
    )
    print(
        f"wrote {result['files']['json']} and {result['files']['markdown']}"
        + (" (logged to W&B)" if result.get("wandb") else "")
    )


def print_comparison(result: dict) -> None:
    from ift.eval.findings import fmt

    for ev in result["evaluations"]:
        print(f"{ev['name']}:")
        for n, g in ev["groups"].items():
            print(f"  {n}: " + ", ".join(f"{k} {fmt(v['rougeL'])} ({v['tasks']})" for k, v in g.items() if v["tasks"]))
        for line in ev["findings"]:
            print(f"  - {line}")
    print("wrote " + ", ".join(result["files"].values()))
