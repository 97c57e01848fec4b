# Evaluation (lensfinder.evaluation.never_seen): quality on never-seen objects against a truth list, at the sky's lens density.


rule evaluate:
    input:
        unpack(model_scores),
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        meta=f"{RESULTS}/ensemble/meta.npz",
        labels=f"{RESULTS}/trainset/labels.parquet",
        rank_summary=f"{RESULTS}/recommendations/summary.json",
        recommendations=f"{RESULTS}/recommendations/recommendations.parquet",
        truth=config["evaluation"]["truth"] or [],  # the rule only runs with a truth list (rule all)
        lookalikes=config["evaluation"].get("lookalikes") or [],
    output:
        metrics=report(f"{RESULTS}/evaluation/metrics.json", caption="../report/evaluation_metrics.rst",
                       category="6. Evaluation"),
        table=report(f"{RESULTS}/evaluation/metrics.csv", caption="../report/evaluation_table.rst",
                     category="6. Evaluation"),
        plot=report(f"{RESULTS}/evaluation/pr_sky.png", caption="../report/evaluation_plot.rst",
                    category="6. Evaluation"),
    log:
        f"{RESULTS}/logs/evaluate.log",
    params:
        models=MODELS,
        evaluation=config["evaluation"],
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/evaluate.py"
