# The labelled training set: gathers every sweep's objects and cutouts.


rule trainset:
    input:
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        cutouts=expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        catalogs=[c["path"] for c in config["lens_catalogs"]],
        extra=trainset_extra_inputs(),
    output:
        labels=f"{RESULTS}/trainset/labels.parquet",
        cutouts=f"{RESULTS}/trainset/cutouts.npy",
        exclusions=f"{RESULTS}/trainset/exclusions.parquet",
        review=f"{RESULTS}/trainset/review.csv",
        review_mosaic=f"{RESULTS}/trainset/review.png",
        summary=f"{RESULTS}/trainset/summary.json",
        summary_table=f"{RESULTS}/trainset/summary.csv",
        summary_plot=f"{RESULTS}/trainset/summary.png",
    log:
        f"{RESULTS}/logs/trainset.log",
    params:
        catalogs=config["lens_catalogs"],
        trainset=config["trainset"],
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/trainset.py"
