# Cutout shards (lensfinder.cutouts): one job per sweep, objects grouped by brick, bricks shared among the job's threads.


rule cutouts:
    input:
        objects=f"{RESULTS}/objects/{{sweep}}.parquet",
        survey=survey_ready(),
    output:
        manifest=f"{RESULTS}/cutouts/{{sweep}}/manifest.json",
    log:
        f"{RESULTS}/logs/cutouts/{{sweep}}.log",
    params:
        cutouts=config["cutouts"],
        survey=config["survey"],
        region=sweep_region,
    threads: 1  # worker processes; on 2 cores two 1-worker jobs beat one 2-worker job (benchmarks/README.md)
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/cutouts.py"
