# Accounting (lensfinder.evaluation.accounting): one table from sweep rows to recommendations, per sweep and in total; it must add up.


rule accounting:
    input:
        unpack(network_scores),
        counts=f"{RESULTS}/objects/selection_counts.csv",
        manifests=expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        rank=f"{RESULTS}/recommendations/counts_per_sweep.csv",
    output:
        report(f"{RESULTS}/accounting.csv", caption="../report/accounting.rst", category="0. Accounting"),
    log:
        f"{RESULTS}/logs/accounting.log",
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        sweeps=SWEEPS,
        models=NETWORKS,  # inference's score tables (the probe scores the same objects)
    localrule: True
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/accounting.py"
