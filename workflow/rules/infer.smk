# Inference (lensfinder.ranking.infer): every network over every sweep's shards, one job per
# batch of sweeps and model (infer.sweeps_per_job), and over the training set for the
# meta-learner.


rule infer:
    input:
        manifests=batch_files(f"{RESULTS}/cutouts/{{sweep}}/manifest.json"),
        checkpoint=f"{RESULTS}/models/{{model}}/best.pt",
    output:
        f"{RESULTS}/scores/{{model}}/{{batch}}.parquet",
    log:
        f"{RESULTS}/logs/infer/{{model}}/{{batch}}.log",
    params:
        infer=INFER_SETTINGS,
        sweeps=batch_sweeps,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/infer.py"


rule trainset_scores:
    input:
        labels=f"{RESULTS}/trainset/labels.parquet",
        cutouts=f"{RESULTS}/trainset/cutouts.npy",
        checkpoint=f"{RESULTS}/models/{{model}}/best.pt",
    output:
        f"{RESULTS}/models/{{model}}/trainset_scores.parquet",
    log:
        f"{RESULTS}/logs/trainset_scores/{{model}}.log",
    params:
        infer=INFER_SETTINGS,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/trainset_scores.py"
