# Object selection (lensfinder.catalog.select): one job per sweep file, and the counts of every cut.


rule select:
    input:
        sweep=sweep_file,
    output:
        objects=f"{RESULTS}/objects/{{sweep}}.parquet",
        counts=f"{RESULTS}/objects/{{sweep}}.counts.csv",
    log:
        f"{RESULTS}/logs/select/{{sweep}}.log",
    params:
        selection=config["selection"],
        region=sweep_region,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/select.py"


rule selection_counts:
    input:
        expand(f"{RESULTS}/objects/{{sweep}}.counts.csv", sweep=SWEEPS),
    output:
        report(f"{RESULTS}/objects/selection_counts.csv", caption="../report/selection_counts.rst", category="1. Selection"),
    log:
        f"{RESULTS}/logs/selection_counts.log",
    localrule: True
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/selection_counts.py"
